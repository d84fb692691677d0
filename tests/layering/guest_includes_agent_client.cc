// Must not compile: the guest shares only the protocol and base with the
// host; the host's agent client is not in its view.
#include "agent/client.h"
