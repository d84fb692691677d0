// microvm-poweroff: the benchmark floor. As PID 1 it powers the VM off at
// once, so booting it measures what the VMM and the kernel cost alone.
#include <sys/reboot.h>
#include <unistd.h>

int main() {
  // As any other PID (run by mistake on a host, as root) it must not reboot.
  if (getpid() != 1) {
    static const char kMessage[] = "microvm-poweroff: refusing to run: must be PID 1 of a microvm guest\n";
    (void)!write(STDERR_FILENO, kMessage, sizeof kMessage - 1);
    return 2;
  }
  sync();
  // reboot=t makes this a reset, and QEMU's -no-reboot turns a reset into exit.
  reboot(RB_AUTOBOOT);
  // Only reached if reboot() failed; PID 1 must not exit (the kernel panics).
  for (;;) pause();
}
