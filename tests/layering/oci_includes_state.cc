// Must not compile: the OCI runtime (src/oci) sees only the public API, so
// the VM store's header is not on its include path. tests/CMakeLists.txt
// builds this and expects "No such file or directory".
#include "state/vm_store.h"
