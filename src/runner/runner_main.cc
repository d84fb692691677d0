#include "runner/runner.h"
#include "runner/runner_seccomp.h"

int main(int argc, char** argv) {
  return microvm::runnerMain(argc, argv, microvm::installRunnerSeccomp, microvm::compileWorkloadSeccomp);
}
