// encodecd's compute thread against the network's disorder and against peers
// that cannot run the model, on 127.0.0.1 with the golden 24 kHz checkpoint:
// - a sender's code frames reordered, duplicated and lost on their way reach an
//   Opus member as the in-order decode (with the losses concealed) encoded by libopus;
// - a peer without the model sends Opus: the room's code members get the codes a
//   local StreamingEncoder gives for libopus's decode of those packets, malformed
//   packets counted and concealed.
// Every expectation is computed here, with the streaming engine and libopus run
// locally. The raw peers talk TCP, so that the disorder is exactly the one the
// test makes (the reorder windows do not care how frames came out of order).
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "encodec/net/codes_payload.h"
#include "encodec/net/opus_codec.h"
#include "golden.h"
#include "loopback.h"

namespace encodec::testing {
namespace {

using std::chrono::milliseconds;

constexpr int kOpusFrameSamples = 480;  // 20 ms at 24 kHz
constexpr int kOpusBitrate = 12000;

wire::Envelope join(const std::string& room, wire::Role role, bool create,
                    wire::PayloadKind kind = wire::PAYLOAD_KIND_RAW_CODES,
                    double bandwidth_kbps = 0.0) {
  wire::Envelope envelope;
  wire::Join* request = envelope.mutable_join();
  request->set_room(room);
  request->set_role(role);
  request->set_create(create);
  request->mutable_receive()->set_kind(kind);
  request->mutable_receive()->set_bandwidth_kbps(bandwidth_kbps);
  if (kind == wire::PAYLOAD_KIND_OPUS) {
    request->mutable_receive()->set_opus_bitrate_bps(kOpusBitrate);
    request->mutable_receive()->set_opus_frame_ms(20);
  }
  return envelope;
}

void expect_joined(RawPeer& peer, const wire::Envelope& request) {
  peer.send(request);
  const auto reply = peer.receive_until(
      [](const wire::Envelope& e) { return e.has_joined() || e.has_error(); }, milliseconds(2000));
  ASSERT_TRUE(reply);
  ASSERT_TRUE(reply->has_joined()) << reply->error().text();
}

// The media a peer receives up to the stream's end mark (bounded: each message
// must come within the timeout).
std::vector<wire::Media> receive_stream(RawPeer& peer) {
  std::vector<wire::Media> stream;
  for (;;) {
    const auto envelope = peer.receive_until([](const wire::Envelope& e) { return e.has_media(); },
                                             milliseconds(10000));
    if (!envelope) {
      ADD_FAILURE() << "the stream did not end (" << stream.size() << " frames received)";
      return stream;
    }
    stream.push_back(envelope->media());
    if (envelope->media().end_of_stream()) return stream;
  }
}

// The Opus packets of a stream decoded in order (the server sends them over
// TCP, so none is missing: checked).
std::vector<float> decode_opus_stream(const std::vector<wire::Media>& stream) {
  std::string error;
  auto decoder = net::OpusFrameDecoder::create(24000, kOpusFrameSamples, &error);
  EXPECT_TRUE(decoder) << error;
  std::vector<float> audio;
  uint32_t expected_sequence = 0;
  for (const wire::Media& media : stream) {
    if (media.payload().empty()) continue;
    EXPECT_EQ(media.kind(), wire::PAYLOAD_KIND_OPUS);
    EXPECT_EQ(media.sequence(), expected_sequence++);
    std::vector<float> frame(kOpusFrameSamples);
    EXPECT_TRUE(decoder->decode(reinterpret_cast<const uint8_t*>(media.payload().data()),
                                media.payload().size(), frame.data()));
    audio.insert(audio.end(), frame.begin(), frame.end());
  }
  return audio;
}

// What an Opus member hears of `audio`: libopus in 20 ms frames at the
// member's bitrate, then decoded (the last partial frame is not sent).
std::vector<float> opus_round_trip(const std::vector<float>& audio) {
  std::string error;
  net::OpusFrameOptions options;
  options.bitrate_bps = kOpusBitrate;
  auto encoder = net::OpusFrameEncoder::create(options, &error);
  auto decoder = net::OpusFrameDecoder::create(24000, kOpusFrameSamples, &error);
  EXPECT_TRUE(encoder && decoder) << error;
  std::vector<float> heard;
  for (size_t at = 0; at + kOpusFrameSamples <= audio.size(); at += kOpusFrameSamples) {
    uint8_t packet[1500];
    const size_t bytes = encoder->encode(audio.data() + at, packet, sizeof packet);
    EXPECT_GT(bytes, 0u);
    std::vector<float> frame(kOpusFrameSamples);
    EXPECT_TRUE(decoder->decode(packet, bytes, frame.data()));
    heard.insert(heard.end(), frame.begin(), frame.end());
  }
  return heard;
}

std::vector<CodeFrame> unpack_stream(const std::vector<wire::Media>& stream) {
  std::vector<CodeFrame> frames;
  for (const wire::Media& media : stream) {
    if (media.payload().empty()) continue;
    EXPECT_EQ(media.kind(), wire::PAYLOAD_KIND_RAW_CODES);
    EXPECT_EQ(media.sequence(), frames.size());
    CodeFrame frame;
    frame.num_codebooks = static_cast<int>(media.num_codebooks());
    EXPECT_TRUE(net::unpack_raw_codes(reinterpret_cast<const uint8_t*>(media.payload().data()),
                                      media.payload().size(), frame.num_codebooks, 10,
                                      frame.codes.data()));
    frames.push_back(frame);
  }
  return frames;
}

void expect_same_codes(const std::vector<CodeFrame>& got, const std::vector<CodeFrame>& expected) {
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    ASSERT_EQ(got[i].num_codebooks, expected[i].num_codebooks) << "frame " << i;
    for (int k = 0; k < expected[i].num_codebooks; ++k) {
      ASSERT_EQ(got[i].codes[k], expected[i].codes[k]) << "frame " << i << ", codebook " << k;
    }
  }
}

class ServerOpusTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ENCODEC_REQUIRE_GOLDEN();
    live_ = golden_live_model();
    server::ServerOptions options = loopback_server_options();
    // The reordering made here (a frame three places late) within the window.
    options.transcode_reorder_frames = 4;
    server_ = std::make_unique<server::Server>(live_->model, live_->checksum, options);
    server_->start();
  }

  const LiveModel* live_ = nullptr;
  std::unique_ptr<server::Server> server_;
};

// The sender's frames come with neighbours swapped (among them the first two:
// the start burst), one frame three places late, duplicates, and one frame
// never: the Opus member hears the in-order decode with exactly that frame
// concealed (StreamingDecoder::push_lost), through libopus.
TEST_F(ServerOpusTest, ReorderedCodeFramesAreTranscodedInOrderWithTheGapConcealed) {
  const std::vector<CodeFrame> frames =
      encode_file(live_->model, golden_path("inputs/speech_24k.wav"), 6.0);
  ASSERT_GT(frames.size(), 60u);

  // The order frames are sent in: each a frame index.
  std::vector<size_t> order;
  for (size_t i = 0; i < frames.size(); ++i) order.push_back(i);
  std::swap(order[0], order[1]);
  std::swap(order[10], order[11]);
  std::swap(order[13], order[14]);
  order.erase(order.begin() + 20);                 // frame 20 comes after 21, 22, 23
  order.insert(order.begin() + 23, 20);
  order.insert(order.begin() + 33, 30);            // frame 30 again, after 31 and 32
  order.insert(order.begin() + 6, 5);              // frame 5 twice in a row
  const size_t lost = 50;
  order.erase(std::find(order.begin(), order.end(), lost));
  const std::set<size_t> lost_frames{lost};
  const uint64_t duplicates = 2;

  RawPeer sender(server_->tcp_port(), /*tcp=*/true), opus(server_->tcp_port(), true);
  ASSERT_NE(sender.hello(), 0u);
  ASSERT_NE(opus.hello(), 0u);
  expect_joined(sender, join("disorder", wire::ROLE_SEND, /*create=*/true));
  expect_joined(opus, join("disorder", wire::ROLE_LISTEN, false, wire::PAYLOAD_KIND_OPUS));

  for (size_t index : order) {
    wire::Envelope envelope;
    wire::Media* media = envelope.mutable_media();
    media->set_sequence(static_cast<uint32_t>(index));
    media->set_timestamp_samples(uint64_t{320} * index);
    media->set_bandwidth_kbps(6.0);
    media->set_kind(wire::PAYLOAD_KIND_RAW_CODES);
    media->set_num_codebooks(static_cast<uint32_t>(frames[index].num_codebooks));
    uint8_t payload[64];
    media->set_payload(payload, net::pack_raw_codes(frames[index].codes.data(),
                                                    frames[index].num_codebooks, 10, payload));
    media->set_end_of_stream(index + 1 == frames.size());
    sender.send(envelope);
  }
  const std::vector<float> heard = decode_opus_stream(receive_stream(opus));

  StreamingDecoder decoder(live_->model);
  for (size_t i = 0; i < frames.size(); ++i) {
    lost_frames.count(i) > 0 ? decoder.push_lost() : decoder.push(frames[i]);
  }
  decoder.finish();
  std::vector<float> decoded(static_cast<size_t>(decoder.samples_ready()));
  decoder.pop(decoded.data(), static_cast<int64_t>(decoded.size()));
  const std::vector<float> expected = opus_round_trip(decoded);

  ASSERT_EQ(heard.size(), expected.size());
  EXPECT_EQ(heard, expected);
  const server::ServerStats stats = server_->stats();
  EXPECT_EQ(stats.transcode_concealed, lost_frames.size());
  EXPECT_EQ(stats.reorder_duplicates, duplicates);
  EXPECT_EQ(stats.reorder_late, 0u);
  EXPECT_EQ(stats.transcoded_frames, expected.size() / kOpusFrameSamples);
  EXPECT_EQ(stats.send_dropped + stats.compute_dropped, 0u);
}

// A peer without the model broadcasts Opus: the code listener gets the codes a
// local StreamingEncoder gives for libopus's decode of the packets (bit for
// bit), a 3 kbps listener their first 4 codebooks, an Opus listener those
// codes' decode through libopus. Two packets libopus refuses are counted and
// concealed in their place; an empty packet is refused at the door; a swapped
// pair and a duplicate go through the reorder window.
TEST_F(ServerOpusTest, OpusFromAPeerWithoutTheModelReachesCodeMembersAsStreamingEncoderCodes) {
  const std::vector<float> signal = read_wav(golden_path("inputs/speech_24k.wav"));
  std::string error;
  net::OpusFrameOptions options;
  options.bitrate_bps = 24000;
  auto opus_encoder = net::OpusFrameEncoder::create(options, &error);
  ASSERT_TRUE(opus_encoder) << error;
  std::vector<std::string> packets;
  for (size_t at = 0; at + kOpusFrameSamples <= signal.size(); at += kOpusFrameSamples) {
    uint8_t packet[1500];
    const size_t bytes = opus_encoder->encode(signal.data() + at, packet, sizeof packet);
    ASSERT_GT(bytes, 0u);
    packets.emplace_back(reinterpret_cast<const char*>(packet), bytes);
  }
  ASSERT_GT(packets.size(), 50u);
  // A code-3 packet (RFC 6716 3.2.5) with a frame count of 0: invalid.
  const std::string malformed("\x03\x00", 2);
  const std::set<size_t> malformed_at{10, 40};
  for (size_t index : malformed_at) packets[index] = malformed;

  // What the server should make of it: libopus's decode, then the streaming encoder.
  auto opus_decoder = net::OpusFrameDecoder::create(24000, kOpusFrameSamples, &error);
  ASSERT_TRUE(opus_decoder) << error;
  std::vector<float> pcm;
  for (size_t i = 0; i < packets.size(); ++i) {
    std::vector<float> frame(kOpusFrameSamples);
    const bool decoded = opus_decoder->decode(reinterpret_cast<const uint8_t*>(packets[i].data()),
                                              packets[i].size(), frame.data());
    ASSERT_EQ(decoded, malformed_at.count(i) == 0) << "packet " << i;
    pcm.insert(pcm.end(), frame.begin(), frame.end());
  }
  const std::vector<CodeFrame> expected = encode_samples(live_->model, pcm, 6.0);
  const std::vector<float> expected_opus = opus_round_trip(decode_codes(live_->model, expected));

  RawPeer sender(server_->tcp_port(), /*tcp=*/true), codes(server_->tcp_port(), true),
      fewer(server_->tcp_port(), true), opus(server_->tcp_port(), true);
  ASSERT_NE(sender.hello(net::kProtocolVersion, /*with_model=*/false), 0u);
  for (RawPeer* peer : {&codes, &fewer, &opus}) ASSERT_NE(peer->hello(), 0u);
  expect_joined(sender, join("opus-in", wire::ROLE_SEND, true, wire::PAYLOAD_KIND_OPUS));
  expect_joined(codes, join("opus-in", wire::ROLE_LISTEN, false));
  expect_joined(fewer, join("opus-in", wire::ROLE_LISTEN, false, wire::PAYLOAD_KIND_RAW_CODES, 3.0));
  expect_joined(opus, join("opus-in", wire::ROLE_LISTEN, false, wire::PAYLOAD_KIND_OPUS));

  std::vector<size_t> order;
  for (size_t i = 0; i < packets.size(); ++i) order.push_back(i);
  std::swap(order[0], order[1]);
  std::swap(order[25], order[26]);
  order.insert(order.begin() + 31, 29);  // packet 29 again
  const auto send = [&](size_t index, const std::string& payload) {
    wire::Envelope envelope;
    wire::Media* media = envelope.mutable_media();
    media->set_sequence(static_cast<uint32_t>(index));
    media->set_timestamp_samples(uint64_t{kOpusFrameSamples} * index);
    media->set_kind(wire::PAYLOAD_KIND_OPUS);
    media->set_payload(payload);
    media->set_end_of_stream(index + 1 == packets.size());
    sender.send(envelope);
  };
  send(5, "");  // no packet and no end mark: refused (packet 5 itself follows)
  for (size_t index : order) send(index, packets[index]);

  expect_same_codes(unpack_stream(receive_stream(codes)), expected);
  expect_same_codes(unpack_stream(receive_stream(fewer)), truncate_codes(expected, 4));
  const std::vector<float> heard = decode_opus_stream(receive_stream(opus));
  ASSERT_EQ(heard.size(), expected_opus.size());
  EXPECT_EQ(heard, expected_opus);

  const server::ServerStats stats = server_->stats();
  EXPECT_EQ(stats.opus_in_malformed, malformed_at.size());
  EXPECT_EQ(stats.opus_in_frames, packets.size() - malformed_at.size());
  EXPECT_EQ(stats.opus_in_concealed, 0u);
  EXPECT_EQ(stats.opus_in_encoded_frames, expected.size());
  EXPECT_EQ(stats.reorder_duplicates, 1u);
  EXPECT_EQ(stats.invalid_media, 1u);
  EXPECT_EQ(stats.send_dropped + stats.compute_dropped, 0u);
}

// An Opus sender whose Goodbye comes right behind its last packets (one TCP
// write: the server reads them all before the compute thread has decoded the
// first) is heard to its end: the session's removal waits for the packets
// submitted before it, and its stream's last code frames still reach the room
// it left. Once with the end mark on the last packet, as encodec-client sends
// it, and once without (the removal ends the stream).
TEST_F(ServerOpusTest, AnOpusSenderThatSaysGoodbyeRightAfterItsLastPacketIsHeardToItsEnd) {
  const std::vector<float> signal = read_wav(golden_path("inputs/speech_24k.wav"));
  std::string error;
  net::OpusFrameOptions options;
  options.bitrate_bps = kOpusBitrate;
  auto opus_encoder = net::OpusFrameEncoder::create(options, &error);
  auto opus_decoder = net::OpusFrameDecoder::create(24000, kOpusFrameSamples, &error);
  ASSERT_TRUE(opus_encoder && opus_decoder) << error;
  std::vector<std::string> packets;
  std::vector<float> pcm;
  for (size_t at = 0; at + kOpusFrameSamples <= signal.size(); at += kOpusFrameSamples) {
    uint8_t packet[1500];
    const size_t bytes = opus_encoder->encode(signal.data() + at, packet, sizeof packet);
    ASSERT_GT(bytes, 0u);
    packets.emplace_back(reinterpret_cast<const char*>(packet), bytes);
    std::vector<float> frame(kOpusFrameSamples);
    ASSERT_TRUE(opus_decoder->decode(packet, bytes, frame.data()));
    pcm.insert(pcm.end(), frame.begin(), frame.end());
  }
  const std::vector<CodeFrame> expected = encode_samples(live_->model, pcm, 6.0);

  for (const bool end_mark : {true, false}) {
    SCOPED_TRACE(end_mark ? "with the end mark" : "without the end mark");
    const std::string room = end_mark ? "bye-marked" : "bye-unmarked";
    RawPeer sender(server_->tcp_port(), /*tcp=*/true), codes(server_->tcp_port(), true);
    ASSERT_NE(sender.hello(net::kProtocolVersion, /*with_model=*/false), 0u);
    ASSERT_NE(codes.hello(), 0u);
    expect_joined(sender, join(room, wire::ROLE_SEND, true, wire::PAYLOAD_KIND_OPUS));
    expect_joined(codes, join(room, wire::ROLE_LISTEN, false));

    std::string burst;
    for (size_t i = 0; i < packets.size(); ++i) {
      wire::Envelope envelope;
      wire::Media* media = envelope.mutable_media();
      media->set_sequence(static_cast<uint32_t>(i));
      media->set_timestamp_samples(uint64_t{kOpusFrameSamples} * i);
      media->set_kind(wire::PAYLOAD_KIND_OPUS);
      media->set_payload(packets[i]);
      media->set_end_of_stream(end_mark && i + 1 == packets.size());
      burst += sender.serialize(envelope);
    }
    wire::Envelope goodbye;
    goodbye.mutable_goodbye()->set_reason("done");
    burst += sender.serialize(goodbye);
    const server::ServerStats before = server_->stats();
    sender.send_bytes(burst);

    expect_same_codes(unpack_stream(receive_stream(codes)), expected);
    const server::ServerStats stats = server_->stats();
    EXPECT_EQ(stats.opus_in_frames - before.opus_in_frames, packets.size());
    EXPECT_EQ(stats.opus_in_encoded_frames - before.opus_in_encoded_frames, expected.size());
    EXPECT_EQ(stats.compute_dropped + stats.compute_discarded + stats.opus_in_concealed, 0u);
  }
}

// encodec-client without the model (Opus both ways) in a call with a client
// that runs it, over TCP: the model's client hears exactly the streaming
// decode of the codes a local StreamingEncoder gives for libopus's decode of
// the Opus client's packets (its file in 20 ms frames, the last one padded with
// silence); the Opus client hears exactly libopus run on the decode of the
// other's codes.
TEST_F(ServerOpusTest, AClientWithoutTheModelCallsAClientWithIt) {
  const std::string dir = ::testing::TempDir() + "/opus_client_call";
  std::filesystem::create_directories(dir);
  const auto member = [&](const std::string& input, const std::string& output) {
    client::ClientOptions options;
    options.server = "127.0.0.1:" + std::to_string(server_->tcp_port());
    options.tcp = true;
    options.mode = client::Mode::kCall;
    options.room = "mixed";
    options.input = golden_path("inputs/" + input);
    options.output = dir + "/" + output;
    options.as_fast_as_possible = true;
    options.wait_for_members = 2;
    return options;
  };
  client::ClientOptions opus_options = member("long_24k.wav", "heard_by_opus.wav");
  opus_options.send_opus = opus_options.receive_opus = true;
  opus_options.opus_bitrate_bps = kOpusBitrate;
  ASSERT_FALSE(client::needs_model(opus_options));
  const client::ClientOptions codes_options = member("chirp_odd_24k.wav", "heard_by_codes.wav");
  ASSERT_TRUE(client::needs_model(codes_options));
  ClientRun opus_run(opus_options), codes_run(codes_options);
  const client::ClientReport opus_report = opus_run.get();
  codes_run.get();

  // The Opus client's packets as its libopus makes them, and the server's decode of them.
  std::vector<float> signal = read_wav(golden_path("inputs/long_24k.wav"));
  const size_t packets = (signal.size() + kOpusFrameSamples - 1) / kOpusFrameSamples;
  signal.resize(packets * kOpusFrameSamples, 0.0f);
  std::string error;
  net::OpusFrameOptions sent_options;
  sent_options.bitrate_bps = kOpusBitrate;
  auto opus_encoder = net::OpusFrameEncoder::create(sent_options, &error);
  auto opus_decoder = net::OpusFrameDecoder::create(24000, kOpusFrameSamples, &error);
  ASSERT_TRUE(opus_encoder && opus_decoder) << error;
  std::vector<float> pcm(signal.size());
  for (size_t at = 0; at < signal.size(); at += kOpusFrameSamples) {
    uint8_t packet[1500];
    const size_t bytes = opus_encoder->encode(signal.data() + at, packet, sizeof packet);
    ASSERT_GT(bytes, 0u);
    ASSERT_TRUE(opus_decoder->decode(packet, bytes, pcm.data() + at));
  }
  const std::vector<CodeFrame> codes = encode_samples(live_->model, pcm, 6.0);

  EXPECT_EQ(opus_report.frames_sent, packets);
  EXPECT_EQ(read_wav(dir + "/heard_by_codes.wav"), as_written(decode_codes(live_->model, codes), dir));
  const std::vector<float> heard_by_opus = opus_round_trip(
      decode_codes(live_->model, encode_file(live_->model, golden_path("inputs/chirp_odd_24k.wav"), 6.0)));
  EXPECT_EQ(read_wav(dir + "/heard_by_opus.wav"), as_written(heard_by_opus, dir));
  const server::ServerStats stats = server_->stats();
  EXPECT_EQ(stats.opus_in_frames, packets);
  EXPECT_EQ(stats.opus_in_encoded_frames, codes.size());
  EXPECT_EQ(stats.opus_in_malformed + stats.opus_in_concealed + stats.invalid_media, 0u);
  EXPECT_EQ(stats.compute_dropped + stats.compute_discarded, 0u);
}

// What needs the model: codes sent or received.
TEST(ClientNeedsModel, OnlyOpusBothWaysNeedsNoModel) {
  client::ClientOptions options;
  for (const client::Mode mode : {client::Mode::kCall, client::Mode::kSend, client::Mode::kListen}) {
    options.mode = mode;
    options.send_opus = options.receive_opus = false;
    EXPECT_TRUE(client::needs_model(options));
    options.receive_opus = true;  // still sends codes, except a listener
    EXPECT_EQ(client::needs_model(options), mode != client::Mode::kListen);
    options.send_opus = true;
    EXPECT_FALSE(client::needs_model(options));
  }
}

// Constructed without the model, a client that would send or receive codes is refused.
TEST(ClientNeedsModel, AClientWithoutTheModelRefusesCodes) {
  client::ClientOptions options;
  options.mode = client::Mode::kCall;
  EXPECT_THROW(client::Client{options}, client::ClientError);
  options.receive_opus = true;
  EXPECT_THROW(client::Client{options}, client::ClientError);  // would send codes
  options.send_opus = true;
  options.lm = true;
  EXPECT_THROW(client::Client{options}, client::ClientError);
  options.lm = false;
  EXPECT_NO_THROW(client::Client{options});
  options.receive_opus = false;  // sending Opus needs receiving it
  EXPECT_THROW(client::Client{options}, client::ClientError);
}

// A member that receives codes has no Opus decoder: Opus from it is refused
// and counted, and the server goes on.
TEST_F(ServerOpusTest, OpusFromAMemberThatReceivesCodesIsCounted) {
  RawPeer peer(server_->tcp_port(), /*tcp=*/true);
  ASSERT_NE(peer.hello(), 0u);
  expect_joined(peer, join("codes-only", wire::ROLE_CALL, true));
  wire::Envelope envelope;
  envelope.mutable_media()->set_kind(wire::PAYLOAD_KIND_OPUS);
  envelope.mutable_media()->set_payload(std::string("\x08\x01\x02", 3));
  peer.send(envelope);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  while (server_->stats().invalid_media == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(5));
  }
  EXPECT_EQ(server_->stats().invalid_media, 1u);
  EXPECT_EQ(server_->stats().opus_in_frames + server_->stats().opus_in_malformed, 0u);
  // The session goes on: its keep-alive is echoed.
  wire::Envelope keep_alive;
  keep_alive.mutable_keep_alive()->set_sent_time_us(1);
  peer.send(keep_alive);
  EXPECT_TRUE(peer.receive_until([](const wire::Envelope& e) { return e.has_keep_alive(); },
                                 milliseconds(2000)));
}

}  // namespace
}  // namespace encodec::testing
