// What a restore loads besides QEMU's device state: guest RAM (the memfd
// the runner keeps, filled while QEMU starts; its zero pages released after
// a stream's load) and the user network's own state.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fs.h"
#include "net/slirp_state.h"
#include "runner/machine_config.h"
#include "runner/runner_internal.h"

namespace microvm {

namespace fs = std::filesystem;

// Guest RAM is a memfd the runner keeps, so that it can save and restore the
// pages itself (QEMU's migration stream then carries only the devices). A
// restore copies the saved RAM's data into it (loadGuestMemory) while QEMU
// starts: only the pages the guest had used are read, and the rest stay
// unallocated holes. An empty saved RAM file means the pages are in the
// stream instead (see releaseStreamedZeros).
//
// A VM made from a boot template with shared memory maps the template's
// memory, shared with every other VM that does, copy-on-write
// (template_memory.h); a private copy is the fallback. No vhost-user
// back-end may map it: such VMs never use templates.
Result<void> Runner::createGuestMemory(const fs::path& saved) {
  uint64_t size = uint64_t{static_cast<uint64_t>(spec_.memory_mib)} << 20;
  if (from_template_ && spec_.template_share_memory && !hasVsockDevice(spec_)) {
    auto shared = TemplateMemory::attach(saved, size);
    if (shared) {
      template_memory_.emplace(std::move(*shared));
      return success();
    }
    log("template memory not shared (a private copy instead): " + shared.error().message());
  }
  guest_ram_.reset(::memfd_create("microvm-guest-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!guest_ram_.valid()) return Error::fromErrno("memfd_create for guest memory");
  if (::ftruncate(guest_ram_.get(), static_cast<off_t>(size)) != 0) return Error::fromErrno("size guest memory");
  if (!saved.empty()) {
    UniqueFd from(::open(saved.c_str(), O_RDONLY | O_CLOEXEC));
    if (!from.valid()) return Error::fromErrno("open saved guest memory " + saved.string());
    struct stat st {};
    if (::fstat(from.get(), &st) != 0) return Error::fromErrno("stat " + saved.string());
    if (st.st_size == 0) {
      incoming_has_ram_ = true;  // releaseStreamedZeros() follows the load
    } else if (static_cast<uint64_t>(st.st_size) != size) {
      return Error(ErrorCode::kInvalidArgument, saved.string() + " is " + std::to_string(st.st_size) +
                                                    " bytes, not the VM's " + std::to_string(size));
    } else {
      saved_ram_ = std::move(from);
      saved_ram_path_ = saved;
    }
  }
  // The vhost-user back-end maps it too: it must never shrink under a mapping.
  if (::fcntl(guest_ram_.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0) {
    return Error::fromErrno("seal guest memory");
  }
  return success();
}

// QEMU writes no guest RAM before a saved state loads (it does not even copy
// its ROM images for an incoming migration), so the copy runs while QEMU
// starts, and must end before the state is loaded.
Result<void> Runner::loadGuestMemory() {
  if (!saved_ram_.valid()) return success();
  UniqueFd from = std::move(saved_ram_);
  uint64_t size = uint64_t{static_cast<uint64_t>(spec_.memory_mib)} << 20;
  auto copied = copySparse(from.get(), guest_ram_.get(), size);
  if (!copied) return std::move(copied).error().withContext("load " + saved_ram_path_.string());
  return success();
}

// network.state beside the saved memory: read now, while root (the runner's
// id may not reach the file), parsed later. A state saved before there was
// such a file, or by a VM without a user network, is empty or absent: the
// stack then starts afresh.
Result<void> Runner::readNetworkState(const fs::path& file) {
  auto bytes = readUntrustedFile(file, net::kMaxSlirpStateFileBytes);
  if (!bytes) return bytes.error().sysErrno() == ENOENT ? success() : Result<void>(std::move(bytes).error());
  if (!bytes->empty()) saved_network_ = std::move(*bytes);
  return success();
}

Result<void> Runner::loadNetworkState() {
  if (!saved_network_) return success();
  std::string bytes = std::move(*saved_network_);
  saved_network_.reset();
  if (!network_) return success();  // saved with a user network, restored without: nothing to load into
  MICROVM_TRY(network_->loadState(bytes));
  log("network: restored the stack's saved state");
  return success();
}

// QEMU loads a stream's RAM by writing every page, the zero pages too, so
// the memfd would hold all of guest memory. Before the guest runs again
// (so that nothing can write a page between the check and the hole), the
// zero pages become holes again.
Result<void> Runner::releaseStreamedZeros() {
  uint64_t size = uint64_t{static_cast<uint64_t>(spec_.memory_mib)} << 20;
  auto kept = releaseZeroBlocks(guest_ram_.get(), size);
  if (!kept) return std::move(kept).error().withContext("release the guest's zero pages");
  log("loaded " + std::to_string(*kept >> 20) + " MiB of guest memory in use from the saved state");
  return success();
}

}  // namespace microvm
