#include "runner/control.h"

#include <gtest/gtest.h>

namespace microvm {
namespace {

TEST(ControlTest, RequestsRoundTrip) {
  for (const RunnerRequest& request : std::vector<RunnerRequest>{
           StopRequest{7}, KillRequest{15}, PauseRequest{}, ResumeRequest{}, SnapshotRequest{"/tmp/snap"},
           SuspendRequest{}, SuspendCommitRequest{}, AttachRequest{true}, PortAddRequest{"127.0.0.1:8080:80/tcp"}, PortRemoveRequest{"127.0.0.1:8080:80/tcp"},
           TimingRequest{"ready", 812.5}, ResizeRequest{40, 120}}) {
    std::string line = encodeRequest(request);
    ASSERT_EQ(line.back(), '\n');
    auto decoded = decodeRequest(line.substr(0, line.size() - 1));
    ASSERT_TRUE(decoded) << decoded.error().message();
    EXPECT_EQ(decoded->index(), request.index());
  }
  EXPECT_EQ(std::get<StopRequest>(*decodeRequest(R"({"op":"stop","timeout":7})")).timeout_seconds, 7);
  EXPECT_EQ(std::get<KillRequest>(*decodeRequest(R"({"op":"kill","signal":10})")).signal, 10);
  EXPECT_TRUE(std::get<AttachRequest>(*decodeRequest(R"({"op":"attach","stdin":true})")).stdin);
  EXPECT_FALSE(std::get<AttachRequest>(*decodeRequest(R"({"op":"attach"})")).stdin);
  EXPECT_EQ(std::get<PortAddRequest>(*decodeRequest(R"({"op":"port_add","mapping":"8080:80"})")).mapping, "8080:80");
  EXPECT_EQ(std::get<TimingRequest>(*decodeRequest(R"({"op":"timing","name":"ready","ms":12.5})")).ms, 12.5);
  auto resize = std::get<ResizeRequest>(*decodeRequest(R"({"op":"resize","rows":40,"cols":120})"));
  EXPECT_EQ(resize.rows, 40);
  EXPECT_EQ(resize.cols, 120);
}

TEST(ControlTest, HostileRequestsAreErrorsNotCrashes) {
  for (const char* line : {"", "not json", "[]", "{}", R"({"op":7})", R"({"op":"stop"})",
                           R"({"op":"stop","timeout":-1})", R"({"op":"stop","timeout":"10"})",
                           R"({"op":"kill","signal":0})", R"({"op":"kill","signal":100000})",
                           R"({"op":"snapshot","dir":"relative"})", R"({"op":"snapshot"})",
                           R"({"op":"attach","stdin":"yes"})", R"({"op":"port_add"})", R"({"op":"port_rm","mapping":""})",
                           R"({"op":"timing","name":"Ready","ms":1})", R"({"op":"timing","name":"ready","ms":-1})",
                           R"({"op":"timing","name":"ready"})",
                           R"({"op":"port_add","mapping":5})", R"({"op":"resize","rows":0,"cols":80})",
                           R"({"op":"resize","rows":24,"cols":65536})", R"({"op":"resize","rows":24})",
                           R"({"op":"resize","rows":"24","cols":80})", R"({"op":"resize","rows":-1,"cols":80})"}) {
    EXPECT_FALSE(decodeRequest(line)) << line;
  }
  auto unknown = decodeRequest(R"({"op":"fly"})");
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code(), ErrorCode::kUnsupported);
}

TEST(ControlTest, RepliesCarryErrors) {
  EXPECT_TRUE(decodeReply(encodeReply(success())));
  auto refused = decodeReply(encodeReply(Error(ErrorCode::kInvalidArgument, "the VM is already paused")));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().message(), "the VM is already paused");
  EXPECT_FALSE(decodeReply("garbage"));
}

}  // namespace
}  // namespace microvm
