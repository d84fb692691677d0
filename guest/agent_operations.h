// The guest agent's operations, one file per concern, called by the agent's
// dispatch (guest/agent.cc) in the connection's own process once the request
// is decoded: exec (guest/agent_exec.cc), files (guest/agent_files.cc) and
// probes (guest/agent_probes.cc). Each answers on `connection` itself; none
// returns an error, since the answer is the report. Internal to the agent.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "agent/framed_connection.h"
#include "agent/protocol.h"
#include "base/unique_fd.h"
#include "guest/agent.h"
#include "microvm/result.h"

namespace microvm::guest {

using agent::FramedConnection;

// Once a file transfer has started, the client gets this long to send each
// following frame; the agent waits as long for room to write.
inline constexpr std::chrono::milliseconds kTransferIdleTimeout{60'000};
// The unit of reads from files, pipes and connections.
inline constexpr size_t kChunk = size_t{64} * 1024;
static_assert(kChunk <= agent::kMaxPayload);

// Answers.
agent::AgentResult failure(uint32_t id, std::string message, int error_number = 0);
// failure() for the errno of the call that just failed.
agent::AgentResult systemFailure(uint32_t id, std::string_view what);
bool sendResult(FramedConnection& connection, const agent::AgentResult& result);

Result<void> setNonBlocking(int fd);
// A line on the agent's stderr (the console).
void agentLog(std::string_view message);

// Files.
void handleStat(FramedConnection& connection, const agent::AgentRequest& request);
void handleList(FramedConnection& connection, const agent::AgentRequest& request);
void handleMkdir(FramedConnection& connection, const agent::AgentRequest& request);
void handlePutFile(FramedConnection& connection, const agent::AgentRequest& request);
void handleGetFile(FramedConnection& connection, const agent::AgentRequest& request);

// Probes of the workload's ports, on loopback.
void handleProbeTcp(FramedConnection& connection, const agent::AgentRequest& request);
void handleProbeHttp(FramedConnection& connection, const agent::AgentRequest& request);

// Refresh: sets the clock and reseeds the RNG through options.refresh.
void handleRefresh(FramedConnection& connection, const agent::AgentRequest& request, const AgentOptions& options);

// Exec: runs the command with the workload's confinement and streams its
// stdio until it exits (request.argv is not empty).
void handleExec(FramedConnection& connection, const agent::AgentRequest& request, const AgentOptions& options);

}  // namespace microvm::guest
