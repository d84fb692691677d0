/* The C API from C (compiled as C11, warnings as errors): boots a VM with an
 * output callback, checks its output and exit code, then a detached VM:
 * get by name, exec with output, inspect, stop, remove; and errors.
 *   capi_test ROOTFS_DIR        (MICROVM_HOME: a scratch data dir) */
#include <microvm/microvm.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;

#define CHECK(condition)                                                  \
  do {                                                                    \
    if (!(condition)) {                                                   \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #condition); \
      ++failures;                                                         \
    }                                                                     \
  } while (0)

struct captured {
  char out[4096];
  size_t out_length;
  char err[4096];
  size_t err_length;
};

static void capture(void* user_data, int stream, const char* data, size_t length) {
  struct captured* sink = user_data;
  char* buffer = stream == 2 ? sink->err : sink->out;
  size_t* used = stream == 2 ? &sink->err_length : &sink->out_length;
  if (*used + length >= sizeof sink->out) length = sizeof sink->out - 1 - *used;
  memcpy(buffer + *used, data, length);
  *used += length;
  buffer[*used] = '\0';
}

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  char* error = NULL;
  microvm_runtime* runtime = NULL;
  CHECK(microvm_runtime_open(NULL, &runtime, &error) == MICROVM_OK);
  if (runtime == NULL) {
    fprintf(stderr, "open: %s\n", error);
    return 1;
  }
  CHECK(strlen(microvm_version()) > 0);

  /* Attached: output through the callback, the exit code from wait. */
  struct captured attached;
  memset(&attached, 0, sizeof attached);
  microvm_options* options = microvm_options_new();
  CHECK(microvm_options_set_rootfs(options, argv[1]) == MICROVM_OK);
  const char* command[] = {"/bin/sh", "-c", "echo out-$GREETING; echo err-line >&2; sleep 3; exit 7"};
  for (size_t i = 0; i < 3; ++i) CHECK(microvm_options_add_arg(options, command[i]) == MICROVM_OK);
  CHECK(microvm_options_add_env(options, "GREETING=from-c") == MICROVM_OK);
  CHECK(microvm_options_set_remove(options, 1) == MICROVM_OK);
  CHECK(microvm_options_set_output(options, capture, &attached) == MICROVM_OK);
  microvm_vm* vm = NULL;
  CHECK(microvm_run(runtime, options, &vm, &error) == MICROVM_OK);
  int exit_code = -1;
  /* The handle comes back with the VM running: exec works at once. */
  const char* probe_argv[] = {"true", NULL};
  int probe_code = -1;
  CHECK(microvm_vm_exec(vm, probe_argv, NULL, NULL, &probe_code, &error) == MICROVM_OK);
  CHECK(probe_code == 0);
  if (error != NULL) fprintf(stderr, "exec: %s\n", error);
  microvm_free_string(error);
  error = NULL;
  CHECK(microvm_vm_wait(vm, &exit_code, &error) == MICROVM_OK);
  CHECK(exit_code == 7);
  CHECK(strcmp(attached.out, "out-from-c\n") == 0);
  CHECK(strcmp(attached.err, "err-line\n") == 0);
  microvm_vm_free(vm);
  microvm_options_free(options);

  /* On a tty: 24x80, stdout and stderr merged, the exit code. */
  struct captured on_tty;
  memset(&on_tty, 0, sizeof on_tty);
  options = microvm_options_new();
  microvm_options_set_rootfs(options, argv[1]);
  const char* tty_command[] = {"/bin/sh", "-c", "stty size; tty >&2; exit 5"};
  for (size_t i = 0; i < 3; ++i) microvm_options_add_arg(options, tty_command[i]);
  microvm_options_set_remove(options, 1);
  CHECK(microvm_options_set_tty(options, 1) == MICROVM_OK);
  CHECK(microvm_options_set_output(options, capture, &on_tty) == MICROVM_OK);
  vm = NULL;
  CHECK(microvm_run(runtime, options, &vm, &error) == MICROVM_OK);
  exit_code = -1;
  CHECK(microvm_vm_wait(vm, &exit_code, &error) == MICROVM_OK);
  CHECK(exit_code == 5);
  CHECK(strncmp(on_tty.out, "24 80\r\n/dev/pts/", 16) == 0);
  CHECK(on_tty.err[0] == '\0');
  microvm_vm_free(vm);
  microvm_options_free(options);

  /* Detached, by name: exec, inspect, stop, remove. */
  options = microvm_options_new();
  microvm_options_set_rootfs(options, argv[1]);
  microvm_options_add_arg(options, "sleep");
  microvm_options_add_arg(options, "600");
  microvm_options_set_name(options, "capi-detached");
  vm = NULL;
  CHECK(microvm_run(runtime, options, &vm, &error) == MICROVM_OK);
  microvm_vm_free(vm);
  microvm_options_free(options);
  vm = NULL;
  CHECK(microvm_vm_get(runtime, "capi-detached", &vm, &error) == MICROVM_OK);
  if (vm != NULL) {
    CHECK(strlen(microvm_vm_id(vm)) == 64);
    struct captured executed;
    memset(&executed, 0, sizeof executed);
    const char* exec_argv[] = {"/bin/sh", "-c", "echo exec-ok; exit 3", NULL};
    exit_code = -1;
    CHECK(microvm_vm_exec(vm, exec_argv, capture, &executed, &exit_code, &error) == MICROVM_OK);
    CHECK(exit_code == 3);
    CHECK(strcmp(executed.out, "exec-ok\n") == 0);
    char* json = NULL;
    CHECK(microvm_vm_inspect(vm, &json, &error) == MICROVM_OK);
    CHECK(json != NULL && strstr(json, "\"name\":\"capi-detached\"") != NULL);
    CHECK(json != NULL && strstr(json, "\"status\":\"running\"") != NULL);
    microvm_free_string(json);
    /* Paused in memory, then to disk where the VM can be saved. */
    CHECK(microvm_vm_resize(vm, 24, 80, NULL) != MICROVM_OK);  /* no tty */
    CHECK(microvm_vm_pause(vm, &error) == MICROVM_OK);
    CHECK(microvm_vm_unpause(vm, &error) == MICROVM_OK);
    /* Suspended to disk and resumed: the agent answers at once. */
    CHECK(microvm_vm_suspend(vm, &error) == MICROVM_OK);
    json = NULL;
    CHECK(microvm_vm_inspect(vm, &json, &error) == MICROVM_OK);
    CHECK(json != NULL && strstr(json, "\"status\":\"suspended\"") != NULL);
    microvm_free_string(json);
    CHECK(microvm_vm_resume(vm, &error) == MICROVM_OK);
    const char* after_argv[] = {"true", NULL};
    exit_code = -1;
    CHECK(microvm_vm_exec(vm, after_argv, NULL, NULL, &exit_code, &error) == MICROVM_OK);
    CHECK(exit_code == 0);
    /* Forked: a running copy that answers exec, the VM running on. */
    microvm_vm** children = NULL;
    CHECK(microvm_vm_fork(vm, 1, "capi-child", &children, &error) == MICROVM_OK);
    if (children != NULL) {
      exit_code = -1;
      CHECK(microvm_vm_exec(children[0], after_argv, NULL, NULL, &exit_code, &error) == MICROVM_OK);
      CHECK(exit_code == 0);
      json = NULL;
      CHECK(microvm_vm_inspect(children[0], &json, &error) == MICROVM_OK);
      CHECK(json != NULL && strstr(json, "\"name\":\"capi-child-1\"") != NULL);
      microvm_free_string(json);
      CHECK(microvm_vm_stop(children[0], 0, &error) == MICROVM_OK);
      CHECK(microvm_vm_remove(children[0], 0, &error) == MICROVM_OK);
      microvm_vm_free(children[0]);
      free(children);
    }
    CHECK(microvm_vm_fork(vm, 0, NULL, &children, &error) == MICROVM_ERROR_INVALID_ARGUMENT);
    CHECK(error != NULL && strstr(error, "out of range") != NULL);
    microvm_free_string(error);
    error = NULL;
    CHECK(microvm_vm_resume(vm, &error) == MICROVM_ERROR_INVALID_ARGUMENT);
    CHECK(error != NULL && strstr(error, "not suspended") != NULL);
    microvm_free_string(error);
    error = NULL;
    CHECK(microvm_vm_stop(vm, 0, &error) == MICROVM_OK);
    CHECK(microvm_vm_remove(vm, 0, &error) == MICROVM_OK);
    microvm_vm_free(vm);
  }

  /* Errors come back as a status and a message, never a crash. */
  vm = NULL;
  CHECK(microvm_vm_get(runtime, "no-such-vm", &vm, &error) == MICROVM_ERROR_NOT_FOUND);
  CHECK(vm == NULL && error != NULL && strstr(error, "no-such-vm") != NULL);
  microvm_free_string(error);
  error = NULL;
  options = microvm_options_new();
  CHECK(microvm_run(runtime, options, &vm, &error) == MICROVM_ERROR_INVALID_ARGUMENT);
  CHECK(error != NULL && strstr(error, "nothing to run") != NULL);
  microvm_free_string(error);
  microvm_options_free(options);
  CHECK(microvm_options_set_image(NULL, "x") == MICROVM_ERROR_INVALID_ARGUMENT);
  CHECK(microvm_vm_wait(NULL, &exit_code, NULL) == MICROVM_ERROR_INVALID_ARGUMENT);

  microvm_runtime_free(runtime);
  if (failures == 0) printf("capi_test: all checks passed\n");
  return failures == 0 ? 0 : 1;
}
