/* microvm's C API: run OCI images and root filesystems as microVMs, from C
 * or any language with a C FFI. It wraps the C++ runtime (microvm/runtime.h).
 *
 *   microvm_runtime* runtime;
 *   char* error = NULL;
 *   if (microvm_runtime_open(NULL, &runtime, &error) != MICROVM_OK) { ...; microvm_free_string(error); }
 *   microvm_options* options = microvm_options_new();
 *   microvm_options_set_rootfs(options, "/srv/rootfs");
 *   microvm_options_add_arg(options, "echo");
 *   microvm_options_add_arg(options, "hello");
 *   microvm_options_set_output(options, on_output, NULL);
 *   microvm_vm* vm;
 *   if (microvm_run(runtime, options, &vm, &error) == MICROVM_OK) {
 *     int code;
 *     microvm_vm_wait(vm, &code, &error);
 *     microvm_vm_free(vm);
 *   }
 *   microvm_options_free(options);
 *   microvm_runtime_free(runtime);
 *
 * Conventions:
 * - Handles are opaque; each one made by a _new, _open, run or get call has
 *   its _free.
 * - Every call that can fail returns a microvm_status. Its `error` argument,
 *   if not NULL, receives a message on failure (NULL on success), to be
 *   released with microvm_free_string.
 * - Strings passed in are copied; strings returned belong to the caller
 *   (microvm_free_string) unless documented otherwise.
 * - Output callbacks run on a thread of the library's; a callback must not
 *   call back into the same VM handle.
 * - Freeing a VM handle never stops the VM.
 */
#ifndef MICROVM_MICROVM_H
#define MICROVM_MICROVM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum microvm_status {
  MICROVM_OK = 0,
  MICROVM_ERROR_INVALID_ARGUMENT, /* the caller's input is wrong */
  MICROVM_ERROR_NOT_FOUND,        /* a named thing does not exist */
  MICROVM_ERROR_ALREADY_EXISTS,
  MICROVM_ERROR_UNAVAILABLE, /* a host facility (QEMU, KVM, kernel) is missing */
  MICROVM_ERROR_UNSUPPORTED,
  MICROVM_ERROR_IO,       /* a system call failed */
  MICROVM_ERROR_PROTOCOL, /* the guest or a peer sent something malformed */
  MICROVM_ERROR_TIMEOUT,
  MICROVM_ERROR_INTERNAL
} microvm_status;

typedef struct microvm_runtime microvm_runtime;
typedef struct microvm_options microvm_options;
typedef struct microvm_vm microvm_vm;

/* Output of a workload or an exec'd command: `stream` 1 is stdout, 2 stderr. */
typedef void (*microvm_output_fn)(void* user_data, int stream, const char* data, size_t length);

/* "0.1.0"; static storage. */
const char* microvm_version(void);
/* A short name for a status ("not found"); static storage. */
const char* microvm_status_name(microvm_status status);
void microvm_free_string(char* string);

/* data_dir NULL: $MICROVM_HOME, $XDG_DATA_HOME/microvm, or /var/lib/microvm. */
microvm_status microvm_runtime_open(const char* data_dir, microvm_runtime** runtime, char** error);
void microvm_runtime_free(microvm_runtime* runtime);

/* Options for microvm_run: an image or a root filesystem directory, and the
 * rest as `microvm run` takes it. Setters return MICROVM_ERROR_INVALID_ARGUMENT
 * for a NULL handle or string. */
microvm_options* microvm_options_new(void);
void microvm_options_free(microvm_options* options);
microvm_status microvm_options_set_image(microvm_options* options, const char* reference);
microvm_status microvm_options_set_rootfs(microvm_options* options, const char* directory);
/* The command: each call appends one argument (with an image: replaces its Cmd). */
microvm_status microvm_options_add_arg(microvm_options* options, const char* argument);
microvm_status microvm_options_set_entrypoint(microvm_options* options, const char* entrypoint);
microvm_status microvm_options_add_env(microvm_options* options, const char* key_equals_value);
microvm_status microvm_options_set_workdir(microvm_options* options, const char* directory);
microvm_status microvm_options_set_user(microvm_options* options, const char* user);
microvm_status microvm_options_set_name(microvm_options* options, const char* name);
microvm_status microvm_options_set_cpus(microvm_options* options, int cpus);
microvm_status microvm_options_set_memory_mib(microvm_options* options, int memory_mib);
microvm_status microvm_options_add_volume(microvm_options* options, const char* host_dir, const char* guest_dir,
                                          int readonly);
/* `-p` syntax: "8080:80", "127.0.0.1:8080:80/tcp". */
microvm_status microvm_options_add_publish(microvm_options* options, const char* mapping);
/* "user" (default) or "none". */
microvm_status microvm_options_set_network(microvm_options* options, const char* network);
/* --egress-allow syntax; any rule makes the policy active (default deny). */
microvm_status microvm_options_add_egress_allow(microvm_options* options, const char* rule);
microvm_status microvm_options_set_tmp_size(microvm_options* options, const char* size);
microvm_status microvm_options_add_vsock_port(microvm_options* options, uint32_t port, const char* host_socket,
                                              int listen);
/* Delete every file of the VM when it ends. */
microvm_status microvm_options_set_remove(microvm_options* options, int remove);
/* The workload's stdin: read from `fd` to EOF (the VM is interactive). */
microvm_status microvm_options_set_stdin_fd(microvm_options* options, int fd);
/* Run the workload on a pseudo-terminal in the guest (`run -t`): its stdout
 * and stderr merge into stream 1; the tty is 24x80 until microvm_vm_resize. */
microvm_status microvm_options_set_tty(microvm_options* options, int tty);
/* Stream the workload's output to `callback`; without one the VM runs
 * detached and its output goes only to its log. */
microvm_status microvm_options_set_output(microvm_options* options, microvm_output_fn callback, void* user_data);

/* Creates and boots a VM; returns once it runs (or fails to). */
microvm_status microvm_run(microvm_runtime* runtime, const microvm_options* options, microvm_vm** vm,
                           char** error);
/* A handle on an existing VM by id, id prefix or name. */
microvm_status microvm_vm_get(microvm_runtime* runtime, const char* reference, microvm_vm** vm, char** error);
/* The VM's full id; valid while the handle lives. */
const char* microvm_vm_id(const microvm_vm* vm);
/* Blocks until the VM ends (and its output was delivered); the workload's
 * exit code (125 if the VM failed before it reported one). */
microvm_status microvm_vm_wait(microvm_vm* vm, int* exit_code, char** error);
/* SIGTERM to the workload, a hard stop after timeout_seconds. */
microvm_status microvm_vm_stop(microvm_vm* vm, int timeout_seconds, char** error);
microvm_status microvm_vm_kill(microvm_vm* vm, int signal, char** error);
/* Resizes the tty of a VM run with microvm_options_set_tty (rows, cols >= 1). */
microvm_status microvm_vm_resize(microvm_vm* vm, unsigned rows, unsigned cols, char** error);
/* Freezes / thaws the VM's vCPUs; its memory stays on the host. */
microvm_status microvm_vm_pause(microvm_vm* vm, char** error);
microvm_status microvm_vm_unpause(microvm_vm* vm, char** error);
/* Saves the VM's memory and devices to disk and ends its processes: the VM
 * is "suspended" (refused, the VM running on, if it cannot be saved). */
microvm_status microvm_vm_suspend(microvm_vm* vm, char** error);
/* Brings a suspended VM back where it was (same id, name, ports, volumes);
 * a paused VM is unpaused. */
microvm_status microvm_vm_resume(microvm_vm* vm, char** error);
/* Starts `count` (1 to 64) running copies of the running VM that continue
 * from this instant; the VM runs on. Children are named "<name_prefix>-<i>"
 * (name_prefix NULL: their short ids). On success *children is an array of
 * `count` handles, each freed with microvm_vm_free, and the array itself
 * with free(). */
microvm_status microvm_vm_fork(microvm_vm* vm, int count, const char* name_prefix, microvm_vm*** children,
                               char** error);
/* Deletes the VM's files; a running VM needs `force`. */
microvm_status microvm_vm_remove(microvm_vm* vm, int force, char** error);
/* Runs argv (NULL-terminated) in the running VM; its output goes to
 * `callback` (may be NULL: discarded); *exit_code receives its exit code. */
microvm_status microvm_vm_exec(microvm_vm* vm, const char* const* argv, microvm_output_fn callback, void* user_data,
                               int* exit_code, char** error);
microvm_status microvm_vm_copy_to(microvm_vm* vm, const char* host_source, const char* guest_destination,
                                  char** error);
microvm_status microvm_vm_copy_from(microvm_vm* vm, const char* guest_source, const char* host_destination,
                                    char** error);
/* The VM as `microvm inspect` shows it, as a JSON object. */
microvm_status microvm_vm_inspect(microvm_vm* vm, char** json, char** error);
/* Releases the handle: output delivery stops (the VM's log keeps it) and the
 * VM keeps running. */
void microvm_vm_free(microvm_vm* vm);

#ifdef __cplusplus
}
#endif

#endif /* MICROVM_MICROVM_H */
