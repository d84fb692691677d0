// The streaming exec: GET /v1/sandboxes/{id}/exec/ws, a WebSocket that
// carries a command's stdin, stdout and stderr, a tty's resizes and the exit
// code (docs/API.md has the frames). A client that goes away kills the
// command in the guest.
#pragma once

#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <memory>
#include <string>

#include "api.h"

namespace microvm::daemon {

using WsRequest = boost::beast::http::request<boost::beast::http::string_body>;

// True for /v1/sandboxes/{id}/exec/ws.
bool isWebSocketExec(const std::string& path);

void startWebSocketExec(Api& api, boost::asio::thread_pool& workers,
                        boost::beast::basic_stream<boost::asio::local::stream_protocol>&& stream, WsRequest&& request,
                        const std::string& path, std::shared_ptr<void> connection_slot);
void startWebSocketExec(Api& api, boost::asio::thread_pool& workers, boost::beast::tcp_stream&& stream,
                        WsRequest&& request, const std::string& path, std::shared_ptr<void> connection_slot);
void startWebSocketExec(Api& api, boost::asio::thread_pool& workers,
                        boost::beast::ssl_stream<boost::beast::tcp_stream>&& stream, WsRequest&& request,
                        const std::string& path, std::shared_ptr<void> connection_slot);

}  // namespace microvm::daemon
