// The network product end to end on 127.0.0.1: a real server (encodec::server::Server,
// what encodecd runs) and real clients (encodec::client::Client, what
// encodec-client runs) with the golden 24 kHz checkpoint. What a client hears
// is compared with the streaming engine run locally on the same input: bit for
// bit where nothing is lost.
#include <filesystem>
#include <thread>

#include <gtest/gtest.h>

#include "encodec/net/impairment.h"
#include "encodec/net/opus_codec.h"
#include "golden.h"
#include "loopback.h"

namespace encodec::testing {
namespace {

using client::ClientOptions;
using client::ClientReport;
using client::Mode;

class LoopbackCallTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ENCODEC_REQUIRE_GOLDEN();
    live_ = golden_live_model();
    dir_ = make_temp_dir(::testing::UnitTest::GetInstance()->current_test_info()->name());
  }

  void start_server(server::ServerOptions options = loopback_server_options()) {
    server_ = std::make_unique<server::Server>(live_->model, live_->checksum, options);
    server_->start();
  }

  ClientOptions options(Mode mode, const std::string& room, const std::string& input,
                        const std::string& output, bool tcp = false) const {
    ClientOptions result;
    result.server = "127.0.0.1:" + std::to_string(tcp ? server_->tcp_port() : server_->udp_port());
    result.tcp = tcp;
    result.mode = mode;
    result.room = room;
    result.input = input.empty() ? "" : golden_path("inputs/" + input);
    result.output = output.empty() ? "null" : dir_ + "/" + output;
    result.as_fast_as_possible = true;
    result.linger_s = 3.0;
    return result;
  }

  std::string input(const std::string& name) const { return golden_path("inputs/" + name); }
  std::vector<float> expected(const std::string& name, double bandwidth = 6.0, int codebooks = 0,
                              size_t first = 0) const {
    std::vector<CodeFrame> frames = encode_file(live_->model, input(name), bandwidth);
    if (codebooks > 0) frames = truncate_codes(frames, codebooks);
    return as_written(decode_codes(live_->model, frames, first), dir_);
  }
  std::vector<float> heard(const std::string& output) const { return read_wav(dir_ + "/" + output); }

  // Listeners need their room to exist: its sender creates it (`rooms`: the
  // number of rooms once it does).
  void wait_for_rooms(uint64_t rooms) const {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (server_->stats().rooms < rooms && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ASSERT_GE(server_->stats().rooms, rooms);
  }

  // Two members join a room, each waits for the other, each sends its file
  // (signed with `token` when there is one).
  void expect_two_party_call(bool tcp, const std::string& token = "") {
    ClientOptions a = options(Mode::kCall, "call", "speech_24k.wav", "a_heard.wav", tcp);
    ClientOptions b = options(Mode::kCall, "call", "long_24k.wav", "b_heard.wav", tcp);
    a.wait_for_members = b.wait_for_members = 2;
    a.token = b.token = token;
    ClientRun run_a(a), run_b(b);
    const ClientReport report_a = run_a.get(), report_b = run_b.get();
    ASSERT_EQ(report_a.streams.size(), 1u);
    ASSERT_EQ(report_b.streams.size(), 1u);
    EXPECT_TRUE(report_a.streams[0].ended);
    EXPECT_TRUE(report_b.streams[0].ended);
    EXPECT_EQ(report_a.streams[0].jitter.too_far_ahead + report_b.streams[0].jitter.too_far_ahead, 0u);
    EXPECT_EQ(report_a.streams[0].jitter.concealed, 0u);
    EXPECT_EQ(report_a.streams[0].jitter.played, report_b.frames_sent);
    EXPECT_EQ(report_b.streams[0].jitter.played, report_a.frames_sent);
    EXPECT_EQ(report_a.unauthenticated + report_a.replayed + report_b.unauthenticated + report_b.replayed, 0u);
    EXPECT_EQ(heard("a_heard.wav"), expected("long_24k.wav"));
    EXPECT_EQ(heard("b_heard.wav"), expected("speech_24k.wav"));
  }

  const LiveModel* live_ = nullptr;
  std::string dir_;
  std::unique_ptr<server::Server> server_;
};

TEST_F(LoopbackCallTest, TwoPartyCallOverUdpEachHearsTheOtherBitForBit) {
  start_server();
  expect_two_party_call(/*tcp=*/false);
  const server::ServerStats stats = server_->stats();
  EXPECT_EQ(stats.sessions_opened, 2u);
  EXPECT_EQ(stats.invalid_media + stats.malformed + stats.rate_limited, 0u);
}

TEST_F(LoopbackCallTest, TwoPartyCallOverTcpEachHearsTheOtherBitForBit) {
  start_server();
  expect_two_party_call(/*tcp=*/true);
}

// With access control, members holding the token have the same call, bit for
// bit, over either transport: every message signed and verified both ways.
TEST_F(LoopbackCallTest, TwoPartyCallSignedWithTheTokenIsBitForBitOverUdpAndTcp) {
  server::ServerOptions server_options = loopback_server_options();
  server_options.auth_token = "token-of-the-loopback-call-test";
  start_server(server_options);
  expect_two_party_call(/*tcp=*/false, server_options.auth_token);
  expect_two_party_call(/*tcp=*/true, server_options.auth_token);
  const server::ServerStats stats = server_->stats();
  EXPECT_EQ(stats.sessions_opened, 4u);
  EXPECT_EQ(stats.unauthenticated + stats.replayed + stats.unknown_session, 0u);
  EXPECT_EQ(stats.invalid_media + stats.malformed + stats.rate_limited, 0u);
}

// One sender, two listeners from the start and one that joins a second in: all
// decode cleanly from their first packet, the late one from the frame it joined at.
TEST_F(LoopbackCallTest, BroadcastToThreeListenersOneJoiningLate) {
  start_server();
  ClientOptions sender = options(Mode::kSend, "radio", "long_24k.wav", "");
  sender.as_fast_as_possible = false;  // real time, so that the late listener joins mid-stream
  sender.wait_for_members = 3;
  ClientOptions first = options(Mode::kListen, "radio", "", "first.wav");
  ClientOptions second = options(Mode::kListen, "radio", "", "second.wav");
  ClientOptions late = options(Mode::kListen, "radio", "", "late.wav");
  ClientRun run_sender(sender);
  wait_for_rooms(1);
  ClientRun run_first(first), run_second(second);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  ClientRun run_late(late);
  const ClientReport sent = run_sender.get();
  const ClientReport report_first = run_first.get(), report_second = run_second.get(),
                     report_late = run_late.get();
  const std::vector<float> everything = expected("long_24k.wav");
  EXPECT_EQ(heard("first.wav"), everything);
  EXPECT_EQ(heard("second.wav"), everything);
  ASSERT_EQ(report_late.streams.size(), 1u);
  const uint32_t joined_at = report_late.streams[0].first_sequence;
  EXPECT_GT(joined_at, 20u);  // it really joined late
  EXPECT_LT(joined_at, sent.frames_sent);
  EXPECT_EQ(report_late.streams[0].jitter.concealed, 0u);
  EXPECT_EQ(heard("late.wav"), expected("long_24k.wav", 6.0, 0, joined_at));
  // Receiver reports come once a second per listener, not once a frame.
  EXPECT_GE(server_->stats().reports, 3u);
  EXPECT_LE(server_->stats().reports, static_cast<uint64_t>(3 * (sent.seconds + 3)));
  for (const ClientReport* report : {&report_first, &report_second}) {
    ASSERT_EQ(report->streams.size(), 1u);
    EXPECT_EQ(report->streams[0].first_sequence, 0u);
    EXPECT_EQ(report->streams[0].jitter.played, sent.frames_sent);
  }
}

// A member that asks for 3 kbps gets the first 4 of the sender's 8 codebooks;
// another member of the same room gets all of them.
TEST_F(LoopbackCallTest, BandwidthDropForOneMemberTruncatesItsCodebooks) {
  start_server();
  ClientOptions sender = options(Mode::kSend, "mixed", "speech_24k.wav", "");
  sender.wait_for_members = 3;
  ClientOptions low = options(Mode::kListen, "mixed", "", "low.wav");
  low.receive_bandwidth_kbps = 3.0;
  ClientOptions full = options(Mode::kListen, "mixed", "", "full.wav");
  ClientRun run_sender(sender);
  wait_for_rooms(1);
  ClientRun run_low(low), run_full(full);
  run_sender.get();
  run_low.get();
  run_full.get();
  EXPECT_EQ(heard("low.wav"), expected("speech_24k.wav", 6.0, /*codebooks=*/4));
  EXPECT_EQ(heard("full.wav"), expected("speech_24k.wav"));
  EXPECT_NE(heard("low.wav"), heard("full.wav"));
}

// A member that asks for Opus gets the server's transcode: the streaming
// decode of the codes, encoded by libopus in 20 ms frames, which the test
// reproduces with libopus itself.
TEST_F(LoopbackCallTest, OpusMemberGetsTheServersTranscode) {
  start_server();
  ClientOptions sender = options(Mode::kSend, "opus", "speech_24k.wav", "");
  sender.wait_for_members = 2;
  ClientOptions listener = options(Mode::kListen, "opus", "", "opus.wav");
  listener.receive_opus = true;
  listener.opus_bitrate_bps = 12000;
  ClientRun run_sender(sender);
  wait_for_rooms(1);
  ClientRun run_listener(listener);
  run_sender.get();
  // The listener ends on the end of the EnCodec stream, which an Opus stream
  // does not carry: it stops after the linger time.
  const ClientReport report = run_listener.get();

  const std::vector<float> decoded =
      decode_codes(live_->model, encode_file(live_->model, input("speech_24k.wav"), 6.0));
  std::string error;
  net::OpusFrameOptions opus_options;
  opus_options.bitrate_bps = 12000;
  auto encoder = net::OpusFrameEncoder::create(opus_options, &error);
  auto decoder = net::OpusFrameDecoder::create(24000, 480, &error);
  ASSERT_TRUE(encoder && decoder) << error;
  std::vector<float> reference;
  for (size_t at = 0; at + 480 <= decoded.size(); at += 480) {
    uint8_t packet[1000];
    const size_t bytes = encoder->encode(decoded.data() + at, packet, sizeof packet);
    ASSERT_GT(bytes, 0u);
    std::vector<float> frame(480);
    ASSERT_TRUE(decoder->decode(packet, bytes, frame.data()));
    reference.insert(reference.end(), frame.begin(), frame.end());
  }
  ASSERT_EQ(report.streams.size(), 1u);
  EXPECT_EQ(report.streams[0].jitter.played, reference.size() / 480);
  EXPECT_EQ(server_->stats().transcoded_frames, reference.size() / 480);
  EXPECT_EQ(heard("opus.wav"), as_written(reference, dir_));
}

// An LM-coded call: the packets are the LM's arithmetic-coded segments, the
// audio heard still equals the local decode bit for bit.
//
// The packets are the protocol's deterministic coder (det1) whatever kernels
// the sender's LM was set to: here the Python package's (LibTorch's), whose
// bytes the listener's deterministic LM could not decode.
TEST_F(LoopbackCallTest, LmCodedPacketsDecodeBitForBit) {
  start_server();
  const auto lm = golden_live_lm();
  ASSERT_EQ(lm->kernels(), LmKernels::kDeterministic);
  ClientOptions sender = options(Mode::kSend, "lm", "long_24k.wav", "");
  sender.lm = true;
  sender.lm_context_frames = 40;
  sender.wait_for_members = 2;
  ClientOptions listener = options(Mode::kListen, "lm", "", "lm.wav");
  listener.lm = true;
  ClientRun run_sender(sender, std::make_shared<const LmModel>(lm->with_kernels(LmKernels::kReference)));
  wait_for_rooms(1);
  ClientRun run_listener(listener, lm);
  const ClientReport sent = run_sender.get();
  const ClientReport report = run_listener.get();
  ASSERT_EQ(report.streams.size(), 1u);
  EXPECT_EQ(report.streams[0].undecodable, 0u);
  EXPECT_EQ(report.streams[0].jitter.played, sent.frames_sent);
  EXPECT_EQ(heard("lm.wav"), expected("long_24k.wav"));
}

// The server cannot drop codebooks of LM-coded packets (it does not run the
// LM), so a 3 kbps member cannot take them: the server asks the sender for raw
// codes, and from the sender's first raw frame on the member hears exactly the
// truncated codes' decode. Over TCP, so that nothing is lost on the way.
TEST_F(LoopbackCallTest, LmSenderSendsRawCodesForAMemberThatCannotTakeLm) {
  start_server();
  const auto lm = golden_live_lm();
  ClientOptions sender = options(Mode::kSend, "lm-mixed", "speech_24k.wav", "", /*tcp=*/true);
  sender.lm = true;
  sender.lm_loss_fallback_s = 60;  // raw codes to the end, however slow this machine
  sender.wait_for_members = 2;
  ClientOptions low = options(Mode::kListen, "lm-mixed", "", "low.wav", /*tcp=*/true);
  low.receive_bandwidth_kbps = 3.0;
  ClientRun run_sender(sender, lm);
  wait_for_rooms(1);
  ClientRun run_low(low);
  const ClientReport sent = run_sender.get();
  const ClientReport heard_report = run_low.get();
  EXPECT_GE(server_->stats().raw_codes_requests, 1u);
  // A few LM frames left before the request came back, then raw codes.
  ASSERT_GE(sent.frames_sent_lm, 1u);
  ASSERT_LT(sent.frames_sent_lm, sent.frames_sent);
  ASSERT_EQ(heard_report.streams.size(), 1u);
  const client::StreamReport& stream = heard_report.streams[0];
  EXPECT_EQ(stream.first_sequence, sent.frames_sent_lm);
  EXPECT_EQ(stream.jitter.played, sent.frames_sent - sent.frames_sent_lm);
  EXPECT_EQ(stream.undecodable, 0u);
  EXPECT_EQ(heard("low.wav"), expected("speech_24k.wav", 6.0, /*codebooks=*/4, stream.first_sequence));
}

// Loss, reordering, duplication and delay jitter between the sender and the
// server (seeded): the receiver stays in sync, concealment covers the gaps,
// and every frame sent is played, concealed or dropped late.
TEST_F(LoopbackCallTest, ImpairedPathStaysInSyncAndAccountsForEveryFrame) {
  start_server();
  net::ImpairmentOptions impairment;
  impairment.loss = 0.08;
  impairment.duplicate = 0.05;
  impairment.reorder = 0.05;
  impairment.reorder_ms = 25;
  impairment.jitter_ms = 15;
  impairment.seed = 42;
  boost::asio::io_context relay_io;
  net::UdpImpairmentRelay relay(
      relay_io,
      boost::asio::ip::udp::endpoint(boost::asio::ip::make_address("127.0.0.1"), server_->udp_port()),
      impairment);
  std::thread relay_thread([&] { relay_io.run(); });
  struct JoinAtExit {
    net::UdpImpairmentRelay& relay;
    std::thread& thread;
    ~JoinAtExit() {
      relay.stop();
      thread.join();
    }
  } join_at_exit{relay, relay_thread};

  for (const bool lm : {false, true}) {
    SCOPED_TRACE(lm ? "LM-coded" : "raw codes");
    const std::string room = lm ? "bad-lm" : "bad-raw";
    ClientOptions sender = options(Mode::kSend, room, "long_24k.wav", "");
    sender.server = "127.0.0.1:" + std::to_string(relay.local_endpoint().port());
    sender.as_fast_as_possible = false;
    sender.wait_for_members = 2;
    sender.lm = lm;
    sender.lm_context_frames = 30;
    ClientOptions listener = options(Mode::kListen, room, "", room + ".wav");
    listener.as_fast_as_possible = false;
    listener.lm = lm;
    listener.linger_s = 1.0;
    const auto model_lm = lm ? golden_live_lm() : nullptr;
    const uint64_t rooms_before = server_->stats().rooms;
    ClientRun run_sender(sender, model_lm);
    wait_for_rooms(rooms_before + 1);
    ClientRun run_listener(listener, model_lm);
    const ClientReport sent = run_sender.get();
    const ClientReport report = run_listener.get();
    ASSERT_EQ(report.streams.size(), 1u);
    const net::JitterBufferStats& jitter = report.streams[0].jitter;
    // Every sequence the sender sent is exactly one of these.
    EXPECT_EQ(jitter.played + jitter.discarded + jitter.concealed + jitter.skipped_concealments,
              sent.frames_sent);
    EXPECT_GT(jitter.concealed + jitter.skipped_concealments, 0u);  // the losses were covered
    EXPECT_GT(jitter.duplicates, 0u);
    EXPECT_TRUE(report.streams[0].ended);
    // In sync: one frame of audio per slot played (plus the decoder's flush at the end).
    const std::vector<float> audio = heard(room + ".wav");
    EXPECT_GT(audio.size(), 0u);
    if (lm) EXPECT_GT(report.streams[0].lm_resets_requested, 0u);
  }
  EXPECT_GT(relay.upstream_stats().dropped, 0u);
}

}  // namespace
}  // namespace encodec::testing
