#include "agent/seccomp_filter.h"

#include <seccomp.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <utility>

#include "base/unique_fd.h"

namespace microvm::agent {

static_assert(sizeof(sock_filter) == kSeccompInstructionBytes);

Result<SeccompAction> parseSeccompAction(std::string_view text) {
  using Kind = SeccompAction::Kind;
  if (text == "allow") return SeccompAction{Kind::kAllow, 0};
  if (text == "kill") return SeccompAction{Kind::kKill, 0};
  constexpr std::string_view kErrnoPrefix = "errno:";
  if (text.starts_with(kErrnoPrefix)) {
    std::string_view digits = text.substr(kErrnoPrefix.size());
    int value = 0;
    auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    // 4095 is the kernel's MAX_ERRNO; from_chars would also take a '-'.
    if (!digits.empty() && std::isdigit(static_cast<unsigned char>(digits.front())) && error == std::errc() &&
        end == digits.data() + digits.size() && value <= 4095) {
      return SeccompAction{Kind::kErrno, value};
    }
  }
  return Error(ErrorCode::kInvalidArgument,
               "unknown seccomp action \"" + std::string(text) + "\" (want allow, kill or errno:N with N <= 4095)");
}

Result<std::optional<SeccompProfile>> parseSeccompProfile(std::string_view default_action,
                                                          const std::vector<std::string>& rules) {
  if (default_action.empty()) {
    if (rules.empty()) return std::optional<SeccompProfile>();
    return Error(ErrorCode::kInvalidArgument,
                 "seccomp: " + std::to_string(rules.size()) + " rules but no default action");
  }
  auto parsed_default = parseSeccompAction(default_action);
  if (!parsed_default.ok())
    return Error(ErrorCode::kInvalidArgument, "seccomp default action: " + parsed_default.error().message());
  SeccompProfile profile{*parsed_default, {}};
  for (const std::string& text : rules) {
    auto refuse = [&](std::string_view why) {
      return Error(ErrorCode::kInvalidArgument, "seccomp rule \"" + text + "\": " + std::string(why));
    };
    size_t colon = text.rfind(':');
    if (colon == std::string::npos) return refuse("want ACTION:SYSCALL");
    std::string_view syscall = std::string_view(text).substr(colon + 1);
    int arg = -1;
    uint32_t value = 0;
    if (size_t bracket = syscall.find('['); bracket != std::string_view::npos) {
      // "socket[0]=40": one digit, "]=", a decimal value.
      std::string_view condition = syscall.substr(bracket);
      syscall = syscall.substr(0, bracket);
      std::string_view digits = condition.size() > 4 ? condition.substr(4) : std::string_view();
      auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
      if (condition.size() <= 4 || condition[1] < '0' || condition[1] > '5' || condition.substr(2, 2) != "]=" ||
          digits.empty() || !std::isdigit(static_cast<unsigned char>(digits.front())) || error != std::errc() ||
          end != digits.data() + digits.size()) {
        return refuse("want SYSCALL[ARG]=VALUE with ARG 0 to 5 and a 32-bit VALUE");
      }
      arg = condition[1] - '0';
    }
    bool valid_name = !syscall.empty() && std::all_of(syscall.begin(), syscall.end(), [](char c) {
      return std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) || c == '_';
    });
    if (!valid_name) return refuse("not a syscall name: \"" + std::string(syscall) + "\"");
    auto action = parseSeccompAction(std::string_view(text).substr(0, colon));
    if (!action.ok()) return refuse(action.error().message());
    auto same_syscall = std::find_if(profile.rules.begin(), profile.rules.end(), [&](const SeccompRule& rule) {
      return rule.syscall == syscall && rule.arg == arg && rule.value == value;
    });
    bool mixed = std::any_of(profile.rules.begin(), profile.rules.end(), [&](const SeccompRule& rule) {
      return rule.syscall == syscall && (rule.arg < 0) != (arg < 0);
    });
    // Which one libseccomp would apply is not worth guessing.
    if (mixed) return refuse(std::string(syscall) + " has rules both with and without a condition");
    if (same_syscall == profile.rules.end()) {
      profile.rules.push_back(SeccompRule{*action, std::string(syscall), arg, value});
    } else if (same_syscall->action != *action) {
      // libseccomp would silently keep the first; the host meant one of them.
      return refuse(std::string(syscall) + " already has a rule with another action");
    }
  }
  // Without execve the workload could never start, and since even the write
  // of the error and exit_group() would likely be filtered, the child would
  // die of a signal without a word. A condition on execve is refused, so
  // this is known now.
  if (std::any_of(profile.rules.begin(), profile.rules.end(),
                  [](const SeccompRule& rule) { return rule.syscall == "execve" && rule.arg >= 0; })) {
    return Error(ErrorCode::kInvalidArgument,
                 "seccomp: a rule for execve with a condition could keep the workload from starting");
  }
  auto execve_rule = std::find_if(profile.rules.begin(), profile.rules.end(),
                                  [](const SeccompRule& rule) { return rule.syscall == "execve"; });
  const SeccompAction& execve_action =
      execve_rule != profile.rules.end() ? execve_rule->action : profile.default_action;
  if (execve_action.kind != SeccompAction::Kind::kAllow) {
    return Error(ErrorCode::kInvalidArgument,
                 "seccomp: the profile does not allow execve, so the workload could never start");
  }
  // Only now, so that "allow:read" still conflicts with "errno:1:read" under
  // an allow default. libseccomp refuses such rules; they change nothing.
  std::erase_if(profile.rules, [&](const SeccompRule& rule) { return rule.action == profile.default_action; });
  return std::optional<SeccompProfile>(std::move(profile));
}

namespace {

uint32_t libseccompAction(const SeccompAction& action) {
  switch (action.kind) {
    case SeccompAction::Kind::kAllow: return SCMP_ACT_ALLOW;
    // The whole process: killing one thread of a multi-threaded workload would
    // leave the rest running without it.
    case SeccompAction::Kind::kKill: return SCMP_ACT_KILL_PROCESS;
    case SeccompAction::Kind::kErrno: return SCMP_ACT_ERRNO(static_cast<uint16_t>(action.error_number));
  }
  return SCMP_ACT_KILL_PROCESS;  // Not reached: the switch covers every kind.
}

// libseccomp returns negated errno values.
Error seccompError(std::string_view what, int result) {
  return Error::fromErrno("seccomp: " + std::string(what), -result);
}


}  // namespace

SeccompFilter::SeccompFilter(SeccompFilter&& other) noexcept
    : context_(std::exchange(other.context_, nullptr)), skipped_(std::move(other.skipped_)) {}

SeccompFilter& SeccompFilter::operator=(SeccompFilter&& other) noexcept {
  if (this != &other) {
    if (context_ != nullptr) seccomp_release(context_);
    context_ = std::exchange(other.context_, nullptr);
    skipped_ = std::move(other.skipped_);
  }
  return *this;
}

SeccompFilter::~SeccompFilter() {
  if (context_ != nullptr) seccomp_release(context_);
}

Result<void> SeccompFilter::load() {
  if (int result = seccomp_load(context_); result != 0) return seccompError("load the filter", result);
  return {};
}

Result<std::vector<sock_filter>> SeccompFilter::program() const {
  // libseccomp exports only to an fd.
  UniqueFd memory(static_cast<int>(::syscall(SYS_memfd_create, "seccomp-bpf", MFD_CLOEXEC)));
  if (!memory.valid()) return Error::fromErrno("seccomp: memfd for the program");
  if (int result = seccomp_export_bpf(context_, memory.get()); result != 0) {
    return seccompError("export the program", result);
  }
  off_t size = ::lseek(memory.get(), 0, SEEK_END);
  if (size <= 0 || size % static_cast<off_t>(sizeof(sock_filter)) != 0 || size > (1 << 20)) {
    return Error(ErrorCode::kInternal, "seccomp: exported program has a bad size");
  }
  std::vector<sock_filter> program(static_cast<size_t>(size) / sizeof(sock_filter));
  // SAFETY: sock_filter is a plain struct; pread fills exactly the vector's bytes.
  if (::pread(memory.get(), reinterpret_cast<char*>(program.data()), static_cast<size_t>(size), 0) != size) {
    return Error::fromErrno("seccomp: read the program");
  }
  return program;
}

Result<void> installSeccompProgram(const std::vector<sock_filter>& program) {
  sock_fprog filter{static_cast<unsigned short>(program.size()), const_cast<sock_filter*>(program.data())};
  // The flags libseccomp uses with its default attributes (no TSYNC, LOG or
  // SPEC_ALLOW); no_new_privs is the caller's business, as with load().
  if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &filter) != 0)
    return Error::fromErrno("seccomp: install the filter");
  return {};
}

Result<SeccompFilter> buildSeccompFilter(const SeccompProfile& profile) {
  scmp_filter_ctx context = seccomp_init(libseccompAction(profile.default_action));
  if (context == nullptr) return Error(ErrorCode::kUnavailable, "seccomp: cannot create a filter");
  SeccompFilter filter(context);
  // libseccomp would set no_new_privs on load by default; whether the workload
  // gets it is the spec's decision alone.
  if (int result = seccomp_attr_set(context, SCMP_FLTATR_CTL_NNP, 0); result != 0) {
    return seccompError("turn off the implicit no_new_privs", result);
  }
  if (int result = seccomp_attr_set(context, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS); result != 0) {
    return seccompError("set the bad-architecture action", result);
  }
  for (const SeccompRule& rule : profile.rules) {
    int number = seccomp_syscall_resolve_name(rule.syscall.c_str());
    if (number == __NR_SCMP_ERROR) {
      filter.skipped_.push_back(rule.syscall);
      continue;
    }
    // Syscalls of other architectures only (socketcall, _llseek) resolve to
    // negative pseudo-numbers, which libseccomp leaves out of the filter.
    // The low 32 bits only: the kernel reads an int argument from the low
    // half of its register, whatever the upper half holds.
    scmp_arg_cmp condition{static_cast<unsigned int>(rule.arg), SCMP_CMP_MASKED_EQ, 0xffffffffu, rule.value};
    unsigned int conditions = rule.arg >= 0 ? 1 : 0;
    if (int result = seccomp_rule_add_array(context, libseccompAction(rule.action), number, conditions, &condition);
        result != 0) {
      return seccompError("add the rule for " + rule.syscall, result);
    }
  }
  return filter;
}

Result<CompiledSeccomp> compileSeccompProgram(const WorkloadSpec& spec) {
  CompiledSeccomp compiled;
  auto profile = parseSeccompProfile(spec.seccomp_default, spec.seccomp_rules);
  if (!profile.ok()) return profile.error();
  if (!*profile) return compiled;
  auto filter = buildSeccompFilter(**profile);
  if (!filter.ok()) return filter.error();
  auto program = filter->program();
  if (!program.ok()) return program.error();
  if (program->size() > kMaxSeccompProgramInstructions) {
    return Error(ErrorCode::kInvalidArgument, "seccomp: the profile compiles to " + std::to_string(program->size()) +
                                                  " instructions, more than the kernel's " +
                                                  std::to_string(kMaxSeccompProgramInstructions));
  }
  // SAFETY: sock_filter is a plain struct of 8 bytes (asserted above).
  compiled.program.assign(reinterpret_cast<const char*>(program->data()), program->size() * sizeof(sock_filter));
  compiled.skipped = filter->skippedSyscalls();
  return compiled;
}

std::string seccompLibraryVersion() {
  const scmp_version* version = seccomp_version();
  return std::to_string(version->major) + "." + std::to_string(version->minor) + "." + std::to_string(version->micro);
}

}  // namespace microvm::agent
