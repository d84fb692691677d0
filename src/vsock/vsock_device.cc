#include "vsock/vsock_device.h"

#include <endian.h>

#include <cstring>

#include "vsock/vhost_user.h"

namespace microvm::vsock {

namespace {

constexpr int kRxQueue = 0;
constexpr int kTxQueue = 1;
// Chains handled per kick before other fds get their turn.
constexpr size_t kBatch = 256;

}  // namespace

size_t processTx(Virtqueue& tx, VsockMuxer& muxer, uint64_t& malformed_packets) {
  size_t used = 0;
  DescriptorChain chain;
  std::string packet;
  for (; used < kBatch; ++used) {
    PopResult popped = tx.pop(chain);
    if (popped == PopResult::kEmpty) break;
    if (popped == PopResult::kMalformed) continue;
    // A TX packet is a header and its payload in readable buffers; the
    // header's length must match what follows it exactly.
    PacketHeader header;
    bool ok = chain.readable_bytes >= kHeaderSize;
    if (ok) {
      char raw[kHeaderSize];
      readFromChain(chain, 0, raw, kHeaderSize);
      ok = decodeHeader({raw, kHeaderSize}, header) && header.len <= kMaxPayload &&
           header.len <= chain.readable_bytes - kHeaderSize;
    }
    if (ok) {
      packet.resize(header.len);
      readFromChain(chain, kHeaderSize, packet.data(), header.len);
    }
    tx.pushUsed(chain.head, 0);
    if (!ok) {
      ++malformed_packets;
      continue;
    }
    muxer.onGuestPacket(header, packet);
  }
  return used;
}

size_t processRx(Virtqueue& rx, GuestMemory& memory, VsockMuxer& muxer) {
  size_t used = 0;
  DescriptorChain chain;
  PacketHeader header;
  std::string payload;
  while (used < kBatch && muxer.hasRx()) {
    PopResult popped = rx.pop(chain);
    if (popped == PopResult::kEmpty) break;
    ++used;
    if (popped == PopResult::kMalformed) continue;
    // A buffer the guest offers must take at least a header and be only
    // device-writable.
    if (chain.writable_bytes < kHeaderSize || !chain.readable.empty()) {
      rx.pushUsed(chain.head, 0);
      continue;
    }
    uint64_t room = std::min<uint64_t>(chain.writable_bytes - kHeaderSize, kMaxPayload);
    if (!muxer.takeRx(static_cast<uint32_t>(room), header, payload)) {
      rx.pushUsed(chain.head, 0);
      break;
    }
    header.len = static_cast<uint32_t>(payload.size());
    uint8_t raw[kHeaderSize];
    encodeHeader(header, raw);
    writeToChain(chain, 0, raw, kHeaderSize, memory);
    writeToChain(chain, kHeaderSize, payload.data(), payload.size(), memory);
    rx.pushUsed(chain.head, static_cast<uint32_t>(kHeaderSize + payload.size()));
  }
  return used;
}

Result<std::unique_ptr<VsockDevice>> VsockDevice::create(EventLoop& loop, VsockConfig config) {
  std::unique_ptr<VsockDevice> device(new VsockDevice(loop, std::move(config)));
  VsockDevice* self = device.get();
  MuxerConfig muxer_config;
  muxer_config.guest_cid = self->config_.guest_cid;
  muxer_config.base = self->config_.base;
  muxer_config.serve_base = self->config_.serve_base;
  muxer_config.ports = self->config_.ports;
  muxer_config.connect_host = self->config_.connect_host;
  auto muxer = VsockMuxer::create(loop, std::move(muxer_config), [self] { self->pumpRx(); });
  if (!muxer) return std::move(muxer).error();
  self->muxer_ = std::move(*muxer);

  VhostUserServer::Device info;
  info.queues = 2;  // RX and TX; QEMU keeps the event queue to itself
  info.config.resize(8);
  uint64_t cid = htole64(self->config_.guest_cid);
  std::memcpy(info.config.data(), &cid, sizeof cid);
  VhostUserServer::Callbacks callbacks;
  callbacks.kicked = [self](int queue) { self->onKick(queue); };
  callbacks.disconnected = [self] { self->muxer_->reset(); };
  callbacks.log = self->config_.log;
  auto server = VhostUserServer::create(loop, self->config_.vhost_socket, std::move(info), std::move(callbacks));
  if (!server) return std::move(server).error();
  self->server_ = std::move(*server);
  return device;
}

VsockDevice::~VsockDevice() {
  if (tx_timer_ != 0) loop_.cancelTimer(tx_timer_);
  if (rx_timer_ != 0) loop_.cancelTimer(rx_timer_);
}

int VsockDevice::controlFd() const { return server_->controlFd(); }
void VsockDevice::serviceControl() { server_->serviceControl(); }

void VsockDevice::onKick(int queue) {
  if (queue == kTxQueue) pumpTx();
  // TX packets may have produced answers, and a kick on RX means buffers.
  pumpRx();
}

void VsockDevice::pumpTx() {
  Virtqueue* tx = server_->queue(kTxQueue);
  if (tx == nullptr || in_tx_) return;
  in_tx_ = true;
  uint64_t overflows = muxer_->stats().control_overflows;
  for (int round = 0; round < 4; ++round) {
    uint64_t before = tx->malformed();
    size_t used = processTx(*tx, *muxer_, malformed_packets_);
    malformed_chains_ += tx->malformed() - before;
    if (used > 0) server_->notify(kTxQueue);
    if (used < kBatch) break;
  }
  in_tx_ = false;
  if (muxer_->stats().control_overflows != overflows && config_.log) {
    config_.log("the guest sends but takes no packets: its vsock connections were closed");
  }
  // A queue left non-empty after the batch is served on the next loop turn.
  if (tx->hasAvailable() && tx_timer_ == 0) {
    tx_timer_ = loop_.addTimer(std::chrono::milliseconds(0), [this] {
      tx_timer_ = 0;
      onKick(kTxQueue);
    });
  }
}

void VsockDevice::pumpRx() {
  if (in_tx_) return;  // onKick fills RX once TX is done
  Virtqueue* rx = server_->queue(kRxQueue);
  if (rx == nullptr) return;
  uint64_t before = rx->malformed();
  size_t used = processRx(*rx, server_->memory(), *muxer_);
  malformed_chains_ += rx->malformed() - before;
  if (used > 0) server_->notify(kRxQueue);
  if (used == kBatch && muxer_->hasRx() && rx_timer_ == 0) {
    rx_timer_ = loop_.addTimer(std::chrono::milliseconds(0), [this] {
      rx_timer_ = 0;
      pumpRx();
    });
  }
}

VsockStats VsockDevice::stats() const {
  VsockStats stats;
  const MuxerStats& muxer = muxer_->stats();
  stats.malformed_chains = malformed_chains_;
  stats.malformed_packets = malformed_packets_ + muxer.malformed_packets;
  stats.credit_violations = muxer.credit_violations;
  stats.resets_sent = muxer.resets_sent;
  stats.connections_opened = muxer.connections_opened;
  stats.control_overflows = muxer.control_overflows;
  return stats;
}

}  // namespace microvm::vsock
