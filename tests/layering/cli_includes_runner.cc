// Must not compile: the CLI sees only the public API (include/microvm), so a
// runner header is not on its include path. tests/CMakeLists.txt builds this
// and expects "No such file or directory".
#include "runner/runner.h"
