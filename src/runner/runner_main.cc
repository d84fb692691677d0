#include "runner/runner.h"

int main(int argc, char** argv) { return microvm::runnerMain(argc, argv); }
