// microvm-init: the guest's PID 1. All of it lives in guest/init.cc.
#include "guest/init.h"

int main() {
  microvm::guest::runInit();
}
