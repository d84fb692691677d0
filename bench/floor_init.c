// The guest of bench/snapshot.sh's bare-QEMU floor: PID 1 of an initramfs
// that holds it twice, as /init and as /true (a symlink; argv[0] picks the
// role). As /init it serves the serial port: for every byte it reads it runs
// /true (vfork + execve + waitpid, what an `exec VM true` costs the guest at
// the least) and answers ACK, or NAK if /true failed. It writes STX once the
// port is in raw mode, so the host knows a byte sent from then on is seen.
// Built by the bench with `gcc -static -O2`; it needs no other file.
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

enum { kReady = 0x02, kAck = 0x06, kNak = 0x15 };

int main(int argc, char** argv) {
  (void)argc;
  const char* name = strrchr(argv[0], '/');
  if (strcmp(name ? name + 1 : argv[0], "true") == 0) return 0;
  // As any other PID (run by mistake on a host) it must not take a terminal over.
  if (getpid() != 1) {
    static const char kMessage[] = "floor_init: refusing to run: must be PID 1 of a bench guest\n";
    (void)!write(STDERR_FILENO, kMessage, sizeof kMessage - 1);
    return 2;
  }
  // The archive holds no device nodes, and devtmpfs is not needed for one.
  mkdir("/dev", 0755);
  mknod("/dev/ttyS0", S_IFCHR | 0600, makedev(4, 64));
  int tty = open("/dev/ttyS0", O_RDWR | O_NOCTTY);
  if (tty < 0) return 1;  // PID 1 exits: the kernel panics and QEMU exits (-no-reboot)
  // Canonical mode would hold a byte until a newline, and echo it back.
  struct termios mode;
  if (tcgetattr(tty, &mode) != 0) return 1;
  cfmakeraw(&mode);
  if (tcsetattr(tty, TCSANOW, &mode) != 0) return 1;
  char byte = kReady;
  if (write(tty, &byte, 1) != 1) return 1;
  char* const true_argv[] = {"/true", NULL};
  char* const no_env[] = {NULL};
  for (;;) {
    ssize_t got = read(tty, &byte, 1);
    if (got < 0 && errno == EINTR) continue;
    if (got != 1) return 1;
    pid_t child = vfork();
    if (child == 0) {
      execve("/true", true_argv, no_env);
      _exit(127);
    }
    int status = 0;
    while (child > 0 && waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    byte = child > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? kAck : kNak;
    if (write(tty, &byte, 1) != 1) return 1;
  }
}
