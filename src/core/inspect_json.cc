// VmInfo as the JSON object `microvm inspect` prints and the C API returns.
#include <nlohmann/json.hpp>

#include "microvm/runtime.h"

namespace microvm {

std::string inspectJson(const VmInfo& vm) {
  nlohmann::json vsock_ports = nlohmann::json::array();
  for (const auto& port : vm.vsock_ports) {
    vsock_ports.push_back({{"port", port.port}, {"host_socket", port.host_socket.string()}, {"listen", port.listen}});
  }
  nlohmann::json json = {{"id", vm.id},
          {"name", vm.name},
          {"command", vm.command},
          {"created_at", vm.created_at},
          {"status", vm.status},
          {"exit_code", vm.has_exit_code ? nlohmann::json(vm.exit_code) : nlohmann::json(nullptr)},
          {"error", vm.error},
          {"started_at", vm.started_at},
          {"finished_at", vm.finished_at},
          {"runner_pid", vm.runner_pid},
          {"qemu_pid", vm.qemu_pid},
          {"qemu_user", vm.qemu_uid < 0 ? nlohmann::json(nullptr)
                                        : nlohmann::json{{"uid", vm.qemu_uid}, {"gid", vm.qemu_gid}}},
          {"runner_user", vm.runner_uid < 0 ? nlohmann::json(nullptr)
                                            : nlohmann::json{{"uid", vm.runner_uid}, {"gid", vm.runner_uid}}},
          {"config",
           {{"accel", vm.accel},
            {"cpus", vm.cpus},
            {"memory_mib", vm.memory_mib},
            {"env", vm.env},
            {"workdir", vm.workdir},
            {"user", vm.user},
            {"hostname", vm.hostname},
            {"interactive", vm.interactive},
            {"tty", vm.tty}}},
          {"boot", {{"path", vm.boot}, {"note", vm.boot_note}}},
          {"network",
           {{"mode", vm.network},
            {"ports", vm.ports},
            {"published", vm.published},
            {"dns", vm.dns},
            {"egress_allow", vm.egress_allow},
            {"egress_allow_cidr", vm.egress_allow_cidr},
            {"egress_deny", vm.egress_deny},
            {"egress_deny_all", vm.egress_deny_all},
            {"egress_default", vm.egress_default_allow ? "allow" : "deny"},
            {"counters", vm.net_counters}}},
          {"timings_ms", vm.timings_ms},
          {"dir", vm.dir.string()},
          {"vsock", vm.vsock_socket.empty() ? nlohmann::json(nullptr)
                                            : nlohmann::json{{"socket", vm.vsock_socket.string()},
                                                             {"ports", vsock_ports}}}};
  // Paths and commands come from users and guests: never throw on bad UTF-8.
  return json.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace microvm
