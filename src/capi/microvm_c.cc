// The C API (include/microvm/microvm.h) over the C++ runtime. Every entry
// point catches everything: no C++ exception reaches a C caller.
#include "microvm/microvm.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "microvm/runtime.h"
#include "microvm/version.h"

struct microvm_runtime {
  microvm::Runtime runtime;
};

struct microvm_options {
  microvm::RunOptions run;
  microvm_output_fn output = nullptr;
  void* output_user_data = nullptr;
};

namespace {

using microvm::Error;
using microvm::ErrorCode;

// Delivers what the workload writes to two pipes to a callback, on its own
// thread, until both pipes close or stop() is called.
class OutputRelay {
 public:
  OutputRelay(microvm_output_fn callback, void* user_data, int out_fd, int err_fd)
      : callback_(callback), user_data_(user_data), fds_{out_fd, err_fd} {
    if (::pipe2(wake_, O_CLOEXEC) != 0) wake_[0] = wake_[1] = -1;
    thread_ = std::thread([this] { run(); });
  }
  OutputRelay(const OutputRelay&) = delete;
  OutputRelay& operator=(const OutputRelay&) = delete;
  ~OutputRelay() {
    stop();
    for (int fd : {fds_[0], fds_[1], wake_[0], wake_[1]}) {
      if (fd >= 0) ::close(fd);
    }
  }

  // Waits for both pipes to close (the writer is gone).
  void finish() {
    if (thread_.joinable()) thread_.join();
  }
  // Stops delivering now.
  void stop() {
    if (!thread_.joinable()) return;
    if (wake_[1] >= 0) {
      char byte = 0;
      (void)!::write(wake_[1], &byte, 1);
    }
    thread_.join();
  }

 private:
  void run() {
    char buffer[65536];
    bool open[2] = {fds_[0] >= 0, fds_[1] >= 0};
    while (open[0] || open[1]) {
      pollfd watch[3] = {{open[0] ? fds_[0] : -1, POLLIN, 0}, {open[1] ? fds_[1] : -1, POLLIN, 0}, {wake_[0], POLLIN, 0}};
      if (::poll(watch, 3, -1) < 0) {
        if (errno == EINTR) continue;
        return;
      }
      if (watch[2].revents != 0) return;
      for (int i = 0; i < 2; ++i) {
        if (watch[i].revents == 0) continue;
        ssize_t got = ::read(fds_[i], buffer, sizeof buffer);
        if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (got <= 0) {
          open[i] = false;
          continue;
        }
        if (callback_ != nullptr) callback_(user_data_, i + 1, buffer, static_cast<size_t>(got));
      }
    }
  }

  microvm_output_fn callback_;
  void* user_data_;
  int fds_[2];
  int wake_[2] = {-1, -1};
  std::thread thread_;
};

// Two pipes for stdout and stderr: read ends for a relay, write ends for the
// producer (closed by the caller once handed over).
struct OutputPipes {
  int read[2] = {-1, -1};
  int write[2] = {-1, -1};
  static std::optional<OutputPipes> make() {
    OutputPipes pipes;
    for (int i = 0; i < 2; ++i) {
      int fds[2];
      if (::pipe2(fds, O_CLOEXEC) != 0) {
        pipes.closeAll();
        return std::nullopt;
      }
      pipes.read[i] = fds[0];
      pipes.write[i] = fds[1];
    }
    return pipes;
  }
  void closeWriteEnds() {
    for (int& fd : write) {
      if (fd >= 0) ::close(fd);
      fd = -1;
    }
  }
  void closeAll() {
    closeWriteEnds();
    for (int& fd : read) {
      if (fd >= 0) ::close(fd);
      fd = -1;
    }
  }
};

}  // namespace

struct microvm_vm {
  std::optional<microvm::VmHandle> handle;
  std::unique_ptr<OutputRelay> relay;
};

namespace {

microvm_status toStatus(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument: return MICROVM_ERROR_INVALID_ARGUMENT;
    case ErrorCode::kNotFound: return MICROVM_ERROR_NOT_FOUND;
    case ErrorCode::kAlreadyExists: return MICROVM_ERROR_ALREADY_EXISTS;
    case ErrorCode::kUnavailable: return MICROVM_ERROR_UNAVAILABLE;
    case ErrorCode::kUnsupported: return MICROVM_ERROR_UNSUPPORTED;
    case ErrorCode::kIo: return MICROVM_ERROR_IO;
    case ErrorCode::kProtocol: return MICROVM_ERROR_PROTOCOL;
    case ErrorCode::kTimeout: return MICROVM_ERROR_TIMEOUT;
    case ErrorCode::kInternal: return MICROVM_ERROR_INTERNAL;
  }
  return MICROVM_ERROR_INTERNAL;
}

char* copyString(const std::string& text) {
  char* copy = static_cast<char*>(std::malloc(text.size() + 1));
  if (copy != nullptr) std::memcpy(copy, text.c_str(), text.size() + 1);
  return copy;
}

microvm_status fail(char** error, microvm_status status, const std::string& message) {
  if (error != nullptr) *error = copyString(message);
  return status;
}

microvm_status fail(char** error, const Error& cause) { return fail(error, toStatus(cause.code()), cause.message()); }

// Runs `body` (returning a microvm_status) with the error out-parameter
// cleared first and every exception turned into MICROVM_ERROR_INTERNAL.
template <typename Body>
microvm_status guarded(char** error, Body body) {
  if (error != nullptr) *error = nullptr;
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return fail(error, MICROVM_ERROR_INTERNAL, "out of memory");
  } catch (const std::exception& exception) {
    return fail(error, MICROVM_ERROR_INTERNAL, exception.what());
  } catch (...) {
    return fail(error, MICROVM_ERROR_INTERNAL, "unexpected exception");
  }
}

// A setter: NULL handle or string is an invalid argument.
template <typename Apply>
microvm_status set(microvm_options* options, const char* value, Apply apply) {
  if (options == nullptr || value == nullptr) return MICROVM_ERROR_INVALID_ARGUMENT;
  return guarded(nullptr, [&] {
    apply(options->run, std::string(value));
    return MICROVM_OK;
  });
}

}  // namespace

namespace {

// A VM operation returning Result<void>.
template <typename Operation>
microvm_status onVm(microvm_vm* vm, char** error, Operation operation) {
  return guarded(error, [&] {
    if (vm == nullptr || !vm->handle) return fail(error, MICROVM_ERROR_INVALID_ARGUMENT, "vm is NULL");
    auto done = operation(*vm->handle);
    if (!done) return fail(error, done.error());
    return MICROVM_OK;
  });
}

}  // namespace

extern "C" {

const char* microvm_version(void) { return microvm::kVersion; }

const char* microvm_status_name(microvm_status status) {
  switch (status) {
    case MICROVM_OK: return "ok";
    case MICROVM_ERROR_INVALID_ARGUMENT: return "invalid argument";
    case MICROVM_ERROR_NOT_FOUND: return "not found";
    case MICROVM_ERROR_ALREADY_EXISTS: return "already exists";
    case MICROVM_ERROR_UNAVAILABLE: return "unavailable";
    case MICROVM_ERROR_UNSUPPORTED: return "unsupported";
    case MICROVM_ERROR_IO: return "i/o error";
    case MICROVM_ERROR_PROTOCOL: return "protocol error";
    case MICROVM_ERROR_TIMEOUT: return "timeout";
    case MICROVM_ERROR_INTERNAL: return "internal error";
  }
  return "unknown status";
}

void microvm_free_string(char* string) { std::free(string); }

microvm_status microvm_runtime_open(const char* data_dir, microvm_runtime** runtime, char** error) {
  return guarded(error, [&] {
    if (runtime == nullptr) return fail(error, MICROVM_ERROR_INVALID_ARGUMENT, "runtime out-parameter is NULL");
    *runtime = nullptr;
    microvm::RuntimeOptions options;
    if (data_dir != nullptr) options.data_dir = data_dir;
    auto opened = microvm::Runtime::open(options);
    if (!opened) return fail(error, opened.error());
    *runtime = new microvm_runtime{std::move(*opened)};
    return MICROVM_OK;
  });
}

void microvm_runtime_free(microvm_runtime* runtime) { delete runtime; }

microvm_options* microvm_options_new(void) {
  try {
    return new microvm_options();
  } catch (...) {
    return nullptr;
  }
}

void microvm_options_free(microvm_options* options) { delete options; }

microvm_status microvm_options_set_image(microvm_options* options, const char* reference) {
  return set(options, reference, [](microvm::RunOptions& run, std::string value) { run.image = std::move(value); });
}

microvm_status microvm_options_set_rootfs(microvm_options* options, const char* directory) {
  return set(options, directory, [](microvm::RunOptions& run, std::string value) { run.rootfs = std::move(value); });
}

microvm_status microvm_options_add_arg(microvm_options* options, const char* argument) {
  return set(options, argument,
             [](microvm::RunOptions& run, std::string value) { run.command.push_back(std::move(value)); });
}

microvm_status microvm_options_set_entrypoint(microvm_options* options, const char* entrypoint) {
  return set(options, entrypoint, [](microvm::RunOptions& run, std::string value) {
    run.has_entrypoint = true;
    run.entrypoint = std::move(value);
  });
}

microvm_status microvm_options_add_env(microvm_options* options, const char* key_equals_value) {
  return set(options, key_equals_value,
             [](microvm::RunOptions& run, std::string value) { run.env.push_back(std::move(value)); });
}

microvm_status microvm_options_set_workdir(microvm_options* options, const char* directory) {
  return set(options, directory, [](microvm::RunOptions& run, std::string value) { run.workdir = std::move(value); });
}

microvm_status microvm_options_set_user(microvm_options* options, const char* user) {
  return set(options, user, [](microvm::RunOptions& run, std::string value) { run.user = std::move(value); });
}

microvm_status microvm_options_set_name(microvm_options* options, const char* name) {
  return set(options, name, [](microvm::RunOptions& run, std::string value) { run.name = std::move(value); });
}

microvm_status microvm_options_set_cpus(microvm_options* options, int cpus) {
  if (options == nullptr) return MICROVM_ERROR_INVALID_ARGUMENT;
  options->run.cpus = cpus;
  return MICROVM_OK;
}

microvm_status microvm_options_set_memory_mib(microvm_options* options, int memory_mib) {
  if (options == nullptr) return MICROVM_ERROR_INVALID_ARGUMENT;
  options->run.memory_mib = memory_mib;
  return MICROVM_OK;
}

microvm_status microvm_options_add_volume(microvm_options* options, const char* host_dir, const char* guest_dir,
                                          int readonly) {
  if (guest_dir == nullptr) return MICROVM_ERROR_INVALID_ARGUMENT;
  return set(options, host_dir, [&](microvm::RunOptions& run, std::string value) {
    microvm::Volume volume;
    volume.host = std::move(value);
    volume.guest = guest_dir;
    volume.readonly = readonly != 0;
    run.volumes.push_back(std::move(volume));
  });
}

microvm_status microvm_options_add_publish(microvm_options* options, const char* mapping) {
  return set(options, mapping,
             [](microvm::RunOptions& run, std::string value) { run.publish.push_back(std::move(value)); });
}

microvm_status microvm_options_set_network(microvm_options* options, const char* network) {
  return set(options, network, [](microvm::RunOptions& run, std::string value) { run.network = std::move(value); });
}

microvm_status microvm_options_add_egress_allow(microvm_options* options, const char* rule) {
  return set(options, rule,
             [](microvm::RunOptions& run, std::string value) { run.egress_allow.push_back(std::move(value)); });
}

microvm_status microvm_options_set_tmp_size(microvm_options* options, const char* size) {
  return set(options, size, [](microvm::RunOptions& run, std::string value) { run.tmp_size = std::move(value); });
}

microvm_status microvm_options_add_vsock_port(microvm_options* options, uint32_t port, const char* host_socket,
                                              int listen) {
  return set(options, host_socket, [&](microvm::RunOptions& run, std::string value) {
    run.vsock_ports.push_back({port, std::move(value), listen != 0});
  });
}

microvm_status microvm_options_set_remove(microvm_options* options, int remove) {
  if (options == nullptr) return MICROVM_ERROR_INVALID_ARGUMENT;
  options->run.remove = remove != 0;
  return MICROVM_OK;
}

microvm_status microvm_options_set_stdin_fd(microvm_options* options, int fd) {
  if (options == nullptr || fd < 0) return MICROVM_ERROR_INVALID_ARGUMENT;
  options->run.interactive = true;
  options->run.stdin_fd = fd;
  return MICROVM_OK;
}

microvm_status microvm_options_set_tty(microvm_options* options, int tty) {
  if (options == nullptr) return MICROVM_ERROR_INVALID_ARGUMENT;
  options->run.tty = tty != 0;
  return MICROVM_OK;
}

microvm_status microvm_options_set_output(microvm_options* options, microvm_output_fn callback, void* user_data) {
  if (options == nullptr) return MICROVM_ERROR_INVALID_ARGUMENT;
  options->output = callback;
  options->output_user_data = user_data;
  return MICROVM_OK;
}

microvm_status microvm_run(microvm_runtime* runtime, const microvm_options* options, microvm_vm** vm, char** error) {
  return guarded(error, [&] {
    if (runtime == nullptr || options == nullptr || vm == nullptr) {
      return fail(error, MICROVM_ERROR_INVALID_ARGUMENT, "runtime, options and vm must not be NULL");
    }
    *vm = nullptr;
    microvm::RunOptions run = options->run;
    run.stdout_fd = run.stderr_fd = -1;  // detached unless output is asked for
    std::optional<OutputPipes> pipes;
    if (options->output != nullptr) {
      pipes = OutputPipes::make();
      if (!pipes) return fail(error, Error::fromErrno("pipe for the VM's output"));
      run.stdout_fd = pipes->write[0];
      run.stderr_fd = pipes->write[1];
    }
    auto started = runtime->runtime.run(run);
    if (pipes) pipes->closeWriteEnds();  // the runner has its own copies
    if (!started) {
      if (pipes) pipes->closeAll();
      return fail(error, started.error());
    }
    auto result = std::make_unique<microvm_vm>();
    result->handle.emplace(std::move(*started));
    if (pipes) {
      result->relay =
          std::make_unique<OutputRelay>(options->output, options->output_user_data, pipes->read[0], pipes->read[1]);
    }
    *vm = result.release();
    return MICROVM_OK;
  });
}

microvm_status microvm_vm_get(microvm_runtime* runtime, const char* reference, microvm_vm** vm, char** error) {
  return guarded(error, [&] {
    if (runtime == nullptr || reference == nullptr || vm == nullptr) {
      return fail(error, MICROVM_ERROR_INVALID_ARGUMENT, "runtime, reference and vm must not be NULL");
    }
    *vm = nullptr;
    auto found = runtime->runtime.get(reference);
    if (!found) return fail(error, found.error());
    auto result = std::make_unique<microvm_vm>();
    result->handle.emplace(std::move(*found));
    *vm = result.release();
    return MICROVM_OK;
  });
}

const char* microvm_vm_id(const microvm_vm* vm) {
  return vm != nullptr && vm->handle ? vm->handle->id().c_str() : "";
}

microvm_status microvm_vm_wait(microvm_vm* vm, int* exit_code, char** error) {
  return guarded(error, [&] {
    if (vm == nullptr || !vm->handle) return fail(error, MICROVM_ERROR_INVALID_ARGUMENT, "vm is NULL");
    auto code = vm->handle->wait();
    if (vm->relay) vm->relay->finish();
    if (!code) return fail(error, code.error());
    if (exit_code != nullptr) *exit_code = *code;
    return MICROVM_OK;
  });
}


microvm_status microvm_vm_stop(microvm_vm* vm, int timeout_seconds, char** error) {
  return onVm(vm, error, [&](const microvm::VmHandle& handle) { return handle.stop(timeout_seconds); });
}

microvm_status microvm_vm_kill(microvm_vm* vm, int signal, char** error) {
  return onVm(vm, error, [&](const microvm::VmHandle& handle) { return handle.kill(signal); });
}

microvm_status microvm_vm_resize(microvm_vm* vm, unsigned rows, unsigned cols, char** error) {
  if (rows == 0 || cols == 0 || rows > 65535 || cols > 65535) {
    return fail(error, MICROVM_ERROR_INVALID_ARGUMENT, "rows and cols must be 1..65535");
  }
  return onVm(vm, error, [&](const microvm::VmHandle& handle) {
    return handle.resize(static_cast<uint16_t>(rows), static_cast<uint16_t>(cols));
  });
}

microvm_status microvm_vm_pause(microvm_vm* vm, char** error) {
  return onVm(vm, error, [](const microvm::VmHandle& handle) { return handle.pause(); });
}

microvm_status microvm_vm_unpause(microvm_vm* vm, char** error) {
  return onVm(vm, error, [](const microvm::VmHandle& handle) { return handle.unpause(); });
}

microvm_status microvm_vm_suspend(microvm_vm* vm, char** error) {
  return onVm(vm, error, [](const microvm::VmHandle& handle) { return handle.suspend(); });
}

microvm_status microvm_vm_resume(microvm_vm* vm, char** error) {
  return onVm(vm, error, [](const microvm::VmHandle& handle) { return handle.resume(); });
}

microvm_status microvm_vm_fork(microvm_vm* vm, int count, const char* name_prefix, microvm_vm*** children,
                               char** error) {
  return guarded(error, [&] {
    if (vm == nullptr || !vm->handle || children == nullptr) {
      return fail(error, MICROVM_ERROR_INVALID_ARGUMENT, "vm and children must not be NULL");
    }
    *children = nullptr;
    auto forked = vm->handle->fork(count, name_prefix == nullptr ? "" : name_prefix);
    if (!forked) return fail(error, forked.error());
    auto* array = static_cast<microvm_vm**>(std::calloc(forked->size(), sizeof(microvm_vm*)));
    if (array == nullptr) return fail(error, MICROVM_ERROR_INTERNAL, "out of memory");
    for (size_t i = 0; i < forked->size(); ++i) {
      auto child = std::make_unique<microvm_vm>();
      child->handle.emplace(std::move((*forked)[i]));
      array[i] = child.release();
    }
    *children = array;
    return MICROVM_OK;
  });
}

microvm_status microvm_vm_remove(microvm_vm* vm, int force, char** error) {
  return onVm(vm, error, [&](const microvm::VmHandle& handle) { return handle.remove(force != 0); });
}

microvm_status microvm_vm_copy_to(microvm_vm* vm, const char* host_source, const char* guest_destination,
                                  char** error) {
  if (host_source == nullptr || guest_destination == nullptr) {
    return fail(error, MICROVM_ERROR_INVALID_ARGUMENT, "paths must not be NULL");
  }
  return onVm(vm, error,
              [&](const microvm::VmHandle& handle) { return handle.copyTo(host_source, guest_destination); });
}

microvm_status microvm_vm_copy_from(microvm_vm* vm, const char* guest_source, const char* host_destination,
                                    char** error) {
  if (guest_source == nullptr || host_destination == nullptr) {
    return fail(error, MICROVM_ERROR_INVALID_ARGUMENT, "paths must not be NULL");
  }
  return onVm(vm, error,
              [&](const microvm::VmHandle& handle) { return handle.copyFrom(guest_source, host_destination); });
}

microvm_status microvm_vm_exec(microvm_vm* vm, const char* const* argv, microvm_output_fn callback, void* user_data,
                               int* exit_code, char** error) {
  return guarded(error, [&] {
    if (vm == nullptr || !vm->handle || argv == nullptr || argv[0] == nullptr) {
      return fail(error, MICROVM_ERROR_INVALID_ARGUMENT, "vm and a non-empty argv are required");
    }
    microvm::ExecOptions options;
    for (const char* const* arg = argv; *arg != nullptr; ++arg) options.command.emplace_back(*arg);
    auto pipes = OutputPipes::make();
    if (!pipes) return fail(error, Error::fromErrno("pipe for the command's output"));
    options.stdout_fd = pipes->write[0];
    options.stderr_fd = pipes->write[1];
    OutputRelay relay(callback, user_data, pipes->read[0], pipes->read[1]);
    auto code = vm->handle->exec(options);
    pipes->closeWriteEnds();  // the relay sees EOF once it has read everything
    relay.finish();
    if (!code) return fail(error, code.error());
    if (exit_code != nullptr) *exit_code = *code;
    return MICROVM_OK;
  });
}

microvm_status microvm_vm_inspect(microvm_vm* vm, char** json, char** error) {
  return guarded(error, [&] {
    if (vm == nullptr || !vm->handle || json == nullptr) {
      return fail(error, MICROVM_ERROR_INVALID_ARGUMENT, "vm and json must not be NULL");
    }
    *json = nullptr;
    auto info = vm->handle->inspect();
    if (!info) return fail(error, info.error());
    *json = copyString(microvm::inspectJson(*info));
    return *json != nullptr ? MICROVM_OK : fail(error, MICROVM_ERROR_INTERNAL, "out of memory");
  });
}

void microvm_vm_free(microvm_vm* vm) {
  try {
    delete vm;  // the relay stops delivering; the VM keeps running
  } catch (...) {
    // Nothing can be reported from here.
  }
}

}  // extern "C"
