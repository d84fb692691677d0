// The `microvm` command line: Docker-like commands translated into calls on
// the public API (include/microvm/). It uses nothing else of the library.
#pragma once

namespace microvm::cli {

// The whole of `microvm`'s main(). Returns the process exit code: the
// workload's for `run`, 125 when microvm itself fails (as Docker does).
int main(int argc, char** argv);

}  // namespace microvm::cli
