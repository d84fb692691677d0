/* Boots a command in a microVM through the C API and prints its output.
 *   run ROOTFS_DIR COMMAND [ARG...]
 * The exit status is the command's. */
#include <stdio.h>

#include <microvm/microvm.h>

static void on_output(void* user_data, int stream, const char* data, size_t length) {
  (void)user_data;
  fwrite(data, 1, length, stream == 2 ? stderr : stdout);
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s ROOTFS_DIR COMMAND [ARG...]\n", argv[0]);
    return 2;
  }
  char* error = NULL;
  microvm_runtime* runtime = NULL;
  if (microvm_runtime_open(NULL, &runtime, &error) != MICROVM_OK) {
    fprintf(stderr, "open: %s\n", error);
    microvm_free_string(error);
    return 1;
  }
  microvm_options* options = microvm_options_new();
  microvm_options_set_rootfs(options, argv[1]);
  for (int i = 2; i < argc; ++i) microvm_options_add_arg(options, argv[i]);
  microvm_options_set_remove(options, 1);
  microvm_options_set_output(options, on_output, NULL);

  int exit_code = 1;
  microvm_vm* vm = NULL;
  microvm_status status = microvm_run(runtime, options, &vm, &error);
  if (status == MICROVM_OK) status = microvm_vm_wait(vm, &exit_code, &error);
  if (status != MICROVM_OK) {
    fprintf(stderr, "microvm: %s: %s\n", microvm_status_name(status), error);
    microvm_free_string(error);
  }
  microvm_vm_free(vm);
  microvm_options_free(options);
  microvm_runtime_free(runtime);
  return exit_code;
}
