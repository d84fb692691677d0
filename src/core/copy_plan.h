// Where `microvm cp` puts things, and with which permissions: Docker's rules
// for trailing slashes and existing directories, and the modes a copy out of
// a guest gets, kept apart from any I/O so that they can be tested.
//
//   auto target = planCopy("/etc/hosts", FileType::kRegular, "/tmp", FileType::kDirectory);
//   // *target == "/tmp/hosts"
//   hostModeFor(04777, 022);  // 0755
#pragma once

#include <optional>
#include <string>

#include "agent/protocol.h"
#include "microvm/result.h"

namespace microvm {

// The path the source itself is copied to (a file, or the directory that
// receives the source directory's entries), given the source as the user
// wrote it and its type, and the destination as written and its type
// (nullopt: it does not exist):
//   - a source ending in '/' or "/." must be a directory; "DIR/." copies
//     DIR's contents into an existing destination directory;
//   - an existing destination directory receives the source by its name;
//   - a directory cannot replace a file;
//   - a missing destination written with a trailing '/' must be created by a
//     directory source; a file source cannot make it.
Result<std::string> planCopy(const std::string& source, agent::FileType source_type, const std::string& destination,
                             std::optional<agent::FileType> destination_type);

// The permission bits a file or directory copied out of a guest gets on the
// host, from the bits the guest reports and the caller's umask: setuid, setgid
// and sticky are dropped, and the umask takes away what it takes from the
// caller's own files (as tar extracts without --same-permissions). Whatever
// the guest says, the copy is no more privileged and no more writable by
// others than a file the caller creates.
uint32_t hostModeFor(uint32_t guest_mode, uint32_t umask);

// The last component of a path, ignoring trailing slashes ("" for "/").
std::string baseName(const std::string& path);

// `path` joined with `name` by exactly one '/'.
std::string joinPath(const std::string& path, const std::string& name);

}  // namespace microvm
