#include "ws_exec.h"

namespace microvm::daemon {

bool isWebSocketExec(const std::string&) { return false; }

void startWebSocketExec(Api&, boost::asio::thread_pool&, boost::beast::basic_stream<boost::asio::local::stream_protocol>&&,
                        WsRequest&&, const std::string&) {}
void startWebSocketExec(Api&, boost::asio::thread_pool&, boost::beast::tcp_stream&&, WsRequest&&, const std::string&) {}
void startWebSocketExec(Api&, boost::asio::thread_pool&, boost::beast::ssl_stream<boost::beast::tcp_stream>&&,
                        WsRequest&&, const std::string&) {}

}  // namespace microvm::daemon
