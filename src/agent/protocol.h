// The host<->guest protocols: the one documented description of everything
// that crosses the VM boundary, and the header both sides include.
// microvm-init (in the guest) and the host library share it; nothing else
// crosses that boundary. The code lives beside it, one seam per file:
//   agent/tlv.h               the TLV codec of structured payloads
//   agent/frame.h             the framing, frame types, FrameReader
//   agent/control_protocol.h  the control port's messages (WorkloadSpec)
//   agent/agent_protocol.h    the agent's messages (requests, results, ...)
//   agent/stream_mux_wire.h   the stream multiplexer's messages (how the
//                             agent's connections cross the microvm.agent port)
//
// Framing (both protocols): a byte stream of frames, each an 8-byte
// little-endian header {u16 type, u16 flags, u32 length} followed by `length`
// payload bytes (at most kMaxPayload, 1 MiB). Flags are sent as 0. A length
// above the limit is a protocol error for the whole stream (FrameReader
// fails and says where), never an assert or an allocation.
//
// Structured payloads (the workload spec, agent requests, results and file
// entries) are sequences of TLV fields {u16 tag, u32 length, bytes}, integers
// little-endian u32 unless noted. A field that runs past the end of its
// payload, or an integer of the wrong width, makes the whole message
// malformed; every decoder returns Result<T> whose kProtocol error says what
// was wrong and where ("request: field 8 (rows) at offset 24: 70000 exceeds
// 65535"). Unknown tags are skipped.
//
// Versioning: each protocol has a version number exchanged in its hello
// (kProtocolVersion, kAgentProtocolVersion). Additions are new frame types and
// new tags, which an older peer skips: unknown frame types are ignored by both
// sides, unknown tags are skipped, unknown agent ops answer kUnsupported. The
// version changes only when an existing meaning changes.
//
// ===========================================================================
// The control port.
//
// Transport: a virtio-serial port named kControlPortName.
//
// Conversation:
//   guest -> host  kHello     u32 protocol version; init is up and reading
//   host  -> guest kSpec      the encoded WorkloadSpec (once, first)
//   guest -> host  kStarted   u32 pid; the workload was forked
//   guest -> host  kStdout / kStderr   raw output bytes of the workload
//   host  -> guest kSignal    u32 signal number, forwarded to the workload
//   host  -> guest kStdin     bytes for the workload's stdin (spec open_stdin)
//   host  -> guest kStdinClose  empty; the workload's stdin reaches EOF once
//                             the bytes before it are delivered (on a tty:
//                             its EOF character)
//   host  -> guest kTerminalSize  u16 rows, u16 cols: resize the workload's
//                             tty (spec tty); ignored without one
//   guest -> host  kError     text; init could not start or run the workload
//   guest -> host  kExit      i32 exit code (128+N if killed by signal N)
//   host  -> guest kExitAck   empty; the host has the exit code, init may
//                             sync and power the VM off
//
// Usage (either side):
//   std::string wire;
//   agent::appendFrame(wire, agent::FrameType::kSignal, agent::encodeU32(15));
//   agent::FrameReader reader;
//   reader.feed(bytes);
//   while (auto frame = reader.next()) handle(*frame);
//   if (reader.failed()) log(reader.failure());
//
// ===========================================================================
// The agent protocol.
//
// Transport: a byte stream to the guest agent, port kAgentPort: one stream
// of the multiplexer (agent/stream_mux.h) over the microvm.agent
// virtio-serial port. The host reaches it through the runner's agent gateway
// (<runtime dir>/vsock.sock: write "CONNECT 1024\n", read "OK <n>\n").
// Framing is the control channel's (appendFrame / FrameReader, 1 MiB cap).
//
// One operation per connection; concurrency is many connections. A
// conversation:
//   client -> agent  kAgentHello  u32 kAgentProtocolVersion
//   client -> agent  kRequest     encodeRequest(): op, request id, arguments
//   agent  -> client kAgentHello  u32 the agent's version
//   agent  -> client kResult      encodeResult(): the request id, a status
//                                 and what the operation answers
// The client may send its hello and request back to back (one round trip).
// An agent that does not speak the client's version answers kResult with
// status kUnsupported and closes. Operations:
//   kPing        -> kResult ok                      (the latency floor)
//   kExec        -> kResult ok {pid} or failed; then, until the process ends:
//                   client: kInput (stdin bytes; empty payload = EOF),
//                           kResize (u16 rows, u16 cols), kExecSignal (u32)
//                   agent:  kOutput (stdout, or the tty), kErrorOutput
//                   and last kExited (u32 exit code: 0-255, or 128+signal)
//   kPutFile     <- kData chunks, then an empty kData (end); the file is
//                   written beside `path` and renamed over it (atomic);
//                   -> kResult.  (link_target set: a symlink, no data.)
//   kGetFile     -> kResult ok {info} or failed; kData chunks; an empty kData
//                   ends a complete file, a kResult (failed) a broken one
//   kStat        -> kResult ok {info} (lstat: a symlink is not followed)
//   kList        -> kEntries (batches of entries), then kResult
//   kMkdir       -> kResult (`parents`: mkdir -p, no error if it exists)
//   kWait        -> kResult ok {exit_code} once the workload has exited
//   kProbeTcp    -> kResult ok if 127.0.0.1:port or [::1]:port accepts
//   kProbeHttp   -> kResult ok {http_status} for GET `path` on 127.0.0.1:port
//   kRefresh     -> kResult once the guest's clock is set to realtime_ns (if
//                   given) and `entropy` is mixed into its RNG and reseeded
// Any other op -> kResult with status kUnsupported. The agent closes the
// connection after the last frame of the operation. Unknown frame types are
// ignored; unknown fields are skipped; a malformed frame or request ends the
// connection (kResult kBadRequest when possible), never the agent.
//
// The agent answers a malformed request with kBadRequest and the decoder's
// reason as its message.
#pragma once

#include "agent/agent_protocol.h"
#include "agent/control_protocol.h"
#include "agent/frame.h"
#include "agent/tlv.h"
