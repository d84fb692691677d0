/* vsock-probe: the guest side of the vsock e2e tests (static, busybox has no
 * AF_VSOCK tool). Data is a fixed pattern or echoed bytes; digests are 64-bit
 * FNV-1a, which the host side computes the same way.
 *
 *   vsock-probe connect PORT send TEXT   connect to the host (CID 2), send TEXT,
 *                                        shut down writing, print "recv: <reply>"
 *   vsock-probe connect PORT source N    send N pattern bytes, shut down writing,
 *                                        print the host's reply
 *   vsock-probe listen PORT echo         serve: echo every connection (one child each)
 *   vsock-probe listen PORT sink         serve: read to EOF, answer "sink <bytes> <fnv>"
 *                                        on the same connection, then close
 *   vsock-probe listen PORT source N     serve: send N pattern bytes, then close
 *   vsock-probe try CID PORT [CID PORT...]
 *                                        one connect each (CID "self": the VM's own),
 *                                        printing "try CID:PORT socket: <error>",
 *                                        "... connect: <error>" or "... connected"; and
 *                                        first whether socket() with garbage in the
 *                                        upper half of the family argument works
 *
 * connect retries for up to 60 s, so the host may set up its server late.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

static uint64_t fnv(uint64_t hash, const unsigned char* data, size_t len) {
  for (size_t i = 0; i < len; ++i) {
    hash ^= data[i];
    hash *= 0x100000001b3ull;
  }
  return hash;
}
static const uint64_t kFnvStart = 0xcbf29ce484222325ull;

static unsigned char pattern(uint64_t i) { return (unsigned char)((i * 131u) ^ (i >> 11)); }

static int writeAll(int fd, const void* data, size_t len) {
  const char* p = data;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static int sendPattern(int fd, uint64_t total) {
  static unsigned char buffer[65536];
  for (uint64_t sent = 0; sent < total;) {
    size_t n = total - sent < sizeof buffer ? (size_t)(total - sent) : sizeof buffer;
    for (size_t i = 0; i < n; ++i) buffer[i] = pattern(sent + i);
    if (writeAll(fd, buffer, n) != 0) return -1;
    sent += n;
  }
  return 0;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void readReplyAndPrint(int fd) {
  char reply[4096];
  size_t have = 0;
  for (;;) {
    ssize_t n = read(fd, reply + have, sizeof reply - 1 - have);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || have + (size_t)n >= sizeof reply - 1) {
      if (n > 0) have += (size_t)n;
      break;
    }
    have += (size_t)n;
  }
  reply[have] = 0;
  printf("recv: %s\n", reply);
}

static int doConnect(unsigned port) {
  struct sockaddr_vm address = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_HOST, .svm_port = port};
  for (int attempt = 0; attempt < 600; ++attempt) {
    int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (fd < 0) {
      perror("socket");
      return -1;
    }
    if (connect(fd, (struct sockaddr*)&address, sizeof address) == 0) return fd;
    close(fd);
    usleep(100000);
  }
  fprintf(stderr, "connect to port %u: %s\n", port, strerror(errno));
  return -1;
}

static void serve(int fd, const char* mode, uint64_t count) {
  if (strcmp(mode, "echo") == 0) {
    char buffer[65536];
    for (;;) {
      ssize_t n = read(fd, buffer, sizeof buffer);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0 || writeAll(fd, buffer, (size_t)n) != 0) break;
    }
  } else if (strcmp(mode, "sink") == 0) {
    unsigned char buffer[65536];
    uint64_t total = 0, hash = kFnvStart;
    double start = now();
    for (;;) {
      ssize_t n = read(fd, buffer, sizeof buffer);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      hash = fnv(hash, buffer, (size_t)n);
      total += (uint64_t)n;
    }
    /* EOF seen: the host shut down writing, and still gets this answer. */
    char line[128];
    int len = snprintf(line, sizeof line, "sink %llu %016llx\n", (unsigned long long)total, (unsigned long long)hash);
    writeAll(fd, line, (size_t)len);
    fprintf(stderr, "sink: %llu bytes in %.2f s\n", (unsigned long long)total, now() - start);
  } else if (strcmp(mode, "source") == 0) {
    sendPattern(fd, count);
  }
  close(fd);
}

/* The VM's own CID, from /dev/vsock; 3 (the runtime's) if that fails. */
static unsigned localCid(void) {
  unsigned cid = 3;
  int fd = open("/dev/vsock", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    if (ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid) != 0) cid = 3;
    close(fd);
  }
  return cid;
}

static int tryConnect(int argc, char** argv) {
  /* The kernel reads the family as an int: a filter that compares all 64
   * bits of the register would let this one through. */
  long high = syscall(SYS_socket, (1L << 32) | AF_VSOCK, SOCK_STREAM, 0);
  printf("socket(high bits): %s\n", high >= 0 ? "ok" : strerror(errno));
  if (high >= 0) close((int)high);
  for (int i = 2; i + 1 < argc; i += 2) {
    unsigned cid = strcmp(argv[i], "self") == 0 ? localCid() : (unsigned)strtoul(argv[i], NULL, 10);
    unsigned port = (unsigned)strtoul(argv[i + 1], NULL, 10);
    int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (fd < 0) {
      printf("try %s:%u socket: %s\n", argv[i], port, strerror(errno));
      continue;
    }
    struct sockaddr_vm address = {.svm_family = AF_VSOCK, .svm_cid = cid, .svm_port = port};
    if (connect(fd, (struct sockaddr*)&address, sizeof address) == 0) {
      printf("try %s:%u connected\n", argv[i], port);
    } else {
      printf("try %s:%u connect: %s\n", argv[i], port, strerror(errno));
    }
    close(fd);
  }
  return 0;
}

int main(int argc, char** argv) {
  if (argc >= 2 && strcmp(argv[1], "try") == 0) {
    setvbuf(stdout, NULL, _IONBF, 0);
    return tryConnect(argc, argv);
  }
  if (argc < 4) {
    fprintf(stderr, "usage: vsock-probe connect|listen PORT MODE [ARG]\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IONBF, 0);
  unsigned port = (unsigned)strtoul(argv[2], NULL, 10);
  const char* mode = argv[3];
  const char* arg = argc > 4 ? argv[4] : "";
  if (strcmp(argv[1], "connect") == 0) {
    int fd = doConnect(port);
    if (fd < 0) return 1;
    double start = now();
    if (strcmp(mode, "send") == 0) {
      if (writeAll(fd, arg, strlen(arg)) != 0) return 1;
    } else if (strcmp(mode, "source") == 0) {
      if (sendPattern(fd, strtoull(arg, NULL, 10)) != 0) return 1;
    } else {
      return 2;
    }
    shutdown(fd, SHUT_WR);
    readReplyAndPrint(fd);
    fprintf(stderr, "connect: done in %.2f s\n", now() - start);
    close(fd);
    return 0;
  }
  if (strcmp(argv[1], "listen") == 0) {
    int listener = socket(AF_VSOCK, SOCK_STREAM, 0);
    struct sockaddr_vm address = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = port};
    if (listener < 0 || bind(listener, (struct sockaddr*)&address, sizeof address) != 0 || listen(listener, 64) != 0) {
      perror("listen");
      return 1;
    }
    signal(SIGCHLD, SIG_IGN); /* children are reaped by the kernel */
    printf("listening on %u\n", port);
    uint64_t count = strtoull(arg, NULL, 10);
    for (;;) {
      int fd = accept(listener, NULL, NULL);
      if (fd < 0) {
        if (errno == EINTR) continue;
        perror("accept");
        return 1;
      }
      pid_t child = fork();
      if (child == 0) {
        close(listener);
        serve(fd, mode, count);
        _exit(0);
      }
      close(fd);
    }
  }
  return 2;
}
