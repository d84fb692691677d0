// The guest side of bench/net.sh, the same static binary for both stacks:
//   tcp_stream push HOST PORT BYTES   connect, send BYTES in 64 KiB writes, close
//   tcp_stream pull HOST PORT         connect, read until the peer closes, print the byte count
// busybox nc moves data in 1 KiB reads and writes, so with it the benchmark
// measured nc's syscall rate in an emulated guest more than the network.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static char block[65536];

int main(int argc, char** argv) {
  int push = argc == 5 && strcmp(argv[1], "push") == 0;
  int pull = argc == 4 && strcmp(argv[1], "pull") == 0;
  if (!push && !pull) {
    fprintf(stderr, "usage: tcp_stream push HOST PORT BYTES | pull HOST PORT\n");
    return 2;
  }
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[3]))};
  if (inet_pton(AF_INET, argv[2], &address.sin_addr) != 1) {
    fprintf(stderr, "tcp_stream: bad address %s\n", argv[2]);
    return 2;
  }
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0 || connect(fd, (struct sockaddr*)&address, sizeof address) != 0) {
    perror("tcp_stream: connect");
    return 1;
  }
  if (push) {
    for (long long left = atoll(argv[4]); left > 0;) {
      ssize_t n = write(fd, block, left < (long long)sizeof block ? (size_t)left : sizeof block);
      if (n <= 0) {
        perror("tcp_stream: write");
        return 1;
      }
      left -= n;
    }
  } else {
    ssize_t n;
    long long got = 0;
    while ((n = read(fd, block, sizeof block)) > 0) got += n;
    if (n < 0) {
      perror("tcp_stream: read");
      return 1;
    }
    printf("%lld\n", got);
  }
  return close(fd) == 0 ? 0 : 1;
}
