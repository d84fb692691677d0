// microvm-init: the guest's PID 1. All of it lives in the microvm_guest_init
// library (guest/init.h).
#include "guest/init.h"

int main() {
  microvm::guest::runInit();
}
