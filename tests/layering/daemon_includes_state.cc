// Must not compile: microvmd sees only the public API (include/microvm), so
// the VM store's header is not on its include path: it reads sandboxes
// through microvm::Runtime. tests/CMakeLists.txt builds this and expects
// "No such file or directory".
#include "state/vm_store.h"
