// The streaming LM coder: frame-by-frame bytes concatenate to the reference's
// chunk bytes; decoding packet by packet returns every frame as soon as its bits
// have arrived; segments make each packet decodable on arrival; truncated and
// corrupt LM data give a clear error, never a crash or a hang.
#include <gtest/gtest.h>

#include <chrono>
#include <random>
#include <sstream>

#include "encodec/compress.h"
#include "encodec/lm.h"
#include "lm_test_util.h"

namespace encodec {
namespace {

using testing::GoldenCase;

std::vector<int64_t> frame_of(const torch::Tensor& codes, int64_t t) {
  const torch::Tensor column = codes.select(1, t).contiguous();
  return std::vector<int64_t>(column.data_ptr<int64_t>(), column.data_ptr<int64_t>() + column.numel());
}

class LmStreamTest : public ::testing::Test {
 protected:
  void SetUp() override { ENCODEC_REQUIRE_GOLDEN(); }
};

TEST_F(LmStreamTest, PushedFramesConcatenateToTheReferenceChunkBytes) {
  int chunks = 0;
  for (const GoldenCase& golden : testing::golden_lm_cases()) {
    const LmModel lm = testing::golden_lm(golden.model);
    LmStreamEncoder encoder(lm, golden.num_codebooks);
    for (size_t chunk = 0; chunk < golden.frames_per_chunk.size(); ++chunk) {
      const torch::Tensor codes = testing::golden_chunk_codes(golden, chunk);
      std::string streamed;
      for (int64_t t = 0; t < codes.size(1); ++t) streamed += encoder.push_frame(frame_of(codes, t));
      streamed += encoder.finish();  // the same encoder goes on with the next chunk
      EXPECT_TRUE(streamed == lm_encode_chunk(lm, codes)) << golden.label << " chunk " << chunk;
      ++chunks;
    }
  }
  EXPECT_GT(chunks, 0);
}

TEST_F(LmStreamTest, PacketByPacketDecodingReturnsEachFrameOnceItsBitsArrived) {
  const GoldenCase golden = testing::golden_lm_cases().at(1);  // speech 6 kbps: 188 frames of 8
  const LmModel lm = testing::golden_lm(golden.model);
  const torch::Tensor codes = testing::golden_chunk_codes(golden, 0);
  LmStreamEncoder encoder(lm, golden.num_codebooks);
  std::vector<std::string> packets;
  for (int64_t t = 0; t < codes.size(1); ++t) packets.push_back(encoder.push_frame(frame_of(codes, t)));
  packets.push_back(encoder.finish());

  // Packet by packet: every frame comes out, in order, by the end.
  LmStreamDecoder decoder(lm, golden.num_codebooks);
  int64_t decoded = 0;
  for (const std::string& packet : packets) {
    decoder.feed(packet);
    while (auto frame = decoder.next_frame()) {
      ASSERT_EQ(*frame, frame_of(codes, decoded)) << "frame " << decoded;
      ++decoded;
    }
  }
  EXPECT_EQ(decoded, codes.size(1));
  EXPECT_EQ(decoder.unread_bytes(), 0u);

  // Byte by byte: a frame needs the bytes the encoder had emitted once it was
  // pushed, plus only the bits it held back then (a few bytes).
  std::vector<size_t> emitted_through;  // bytes emitted once frame t was pushed
  size_t emitted = 0;
  for (size_t t = 0; t + 1 < packets.size(); ++t) emitted_through.push_back(emitted += packets[t].size());
  const std::string all = [&] {
    std::string joined;
    for (const std::string& packet : packets) joined += packet;
    return joined;
  }();
  LmStreamDecoder bytewise(lm, golden.num_codebooks);
  size_t fed = 0, max_lookahead = 0;
  for (int64_t t = 0; t < codes.size(1); ++t) {
    std::optional<std::vector<int64_t>> frame;
    while (!(frame = bytewise.next_frame())) {
      ASSERT_LT(fed, all.size());
      bytewise.feed(all.substr(fed++, 1));
    }
    ASSERT_EQ(*frame, frame_of(codes, t));
    max_lookahead = std::max(max_lookahead, fed > emitted_through[t] ? fed - emitted_through[t] : 0);
  }
  std::cout << "[ lookahead] a frame needed at most " << max_lookahead
            << " bytes beyond those emitted when it was pushed\n";
  EXPECT_LE(max_lookahead, 8u);
}

TEST_F(LmStreamTest, SegmentsMakeEveryPacketDecodableOnArrival) {
  const GoldenCase golden = testing::golden_lm_cases().at(0);  // speech 1.5 kbps
  const LmModel lm = testing::golden_lm(golden.model);
  const torch::Tensor codes = testing::golden_chunk_codes(golden, 0);
  LmStreamEncoder encoder(lm, golden.num_codebooks);
  LmStreamDecoder decoder(lm, golden.num_codebooks);
  size_t total = 0;
  for (int64_t t = 0; t < codes.size(1); t += 3) {
    // Packets of 3 frames (the last one shorter), each ended as a segment.
    std::string packet;
    const int64_t end = std::min<int64_t>(t + 3, codes.size(1));
    for (int64_t f = t; f < end; ++f) packet += encoder.push_frame(frame_of(codes, f));
    packet += encoder.end_segment();
    total += packet.size();
    decoder.feed(packet);
    for (int64_t f = t; f < end; ++f) {
      const auto frame = decoder.next_frame();
      ASSERT_TRUE(frame.has_value()) << "frame " << f << " not decodable from its packet";
      EXPECT_EQ(*frame, frame_of(codes, f));
    }
    // Asking past the segment's end decodes padding (or waits); end_segment drops it.
    decoder.next_frame();
    decoder.end_segment();
    EXPECT_EQ(decoder.unread_bytes(), 0u) << "packet of frame " << t;
  }
  const size_t continuous = lm_encode_chunk(lm, codes).size();
  std::cout << "[ segments ] " << total << " bytes in packets of 3 frames vs " << continuous
            << " in one segment\n";
  EXPECT_LE(total, continuous + 4 * static_cast<size_t>((codes.size(1) + 2) / 3));
}

TEST_F(LmStreamTest, FinishStartsANewChunkWithAFreshLmState) {
  const GoldenCase golden = testing::golden_lm_cases().at(11);  // music 48 kHz 6 kbps: 3 chunks
  ASSERT_EQ(golden.frames_per_chunk.size(), 3u);
  const LmModel lm = testing::golden_lm(golden.model);
  LmStreamEncoder encoder(lm, golden.num_codebooks);
  LmStreamDecoder decoder(lm, golden.num_codebooks);
  for (size_t chunk = 0; chunk < 3; ++chunk) {
    const torch::Tensor codes = testing::golden_chunk_codes(golden, chunk);
    std::string bytes;
    for (int64_t t = 0; t < codes.size(1); ++t) bytes += encoder.push_frame(frame_of(codes, t));
    bytes += encoder.finish();
    decoder.feed(bytes);
    for (int64_t t = 0; t < codes.size(1); ++t) {
      const auto frame = decoder.next_frame();
      ASSERT_TRUE(frame.has_value());
      ASSERT_EQ(*frame, frame_of(codes, t)) << "chunk " << chunk << " frame " << t;
    }
    decoder.finish();
    EXPECT_EQ(decoder.frames_in_chunk(), 0);
  }
}

TEST_F(LmStreamTest, InvalidUseIsRefused) {
  const LmModel lm = testing::golden_lm("encodec_24khz");
  LmStreamEncoder encoder(lm, 2);
  EXPECT_THROW(encoder.push_frame(std::vector<int64_t>{1, 1024}), std::invalid_argument);
  EXPECT_THROW(encoder.push_frame(std::vector<int64_t>{-1, 0}), std::invalid_argument);
  EXPECT_THROW(encoder.push_frame(std::vector<int64_t>{1, 2, 3}), std::invalid_argument);
  EXPECT_THROW(LmStreamEncoder(lm, 33), c10::Error);
}

// ---------------------------------------------------------------- damaged data

DecompressedAudio decompress_golden(const std::string& bytes) {
  return decompress(
      bytes, [](const std::string& name) { return testing::golden_model(name); },
      [](const std::string& name) { return testing::golden_lm(name); });
}

TEST_F(LmStreamTest, EveryTruncationOfSmallLmFilesIsAFormatError) {
  ENCODEC_REQUIRE_REFERENCE_KERNELS();  // the golden LM files decode only with their probabilities
  for (const std::string name : {"tiny_24k_24kbps_lm", "short_48k_24kbps_lm", "tiny_24k_1.5kbps_lm"}) {
    const std::string bytes = testing::read_file_bytes(testing::golden_path("cases/" + name + ".ecdc"));
    for (size_t length = 0; length < bytes.size(); ++length) {
      try {
        decompress_golden(bytes.substr(0, length));
        ADD_FAILURE() << name << " cut to " << length << " of " << bytes.size() << " bytes decoded";
      } catch (const EcdcFormatError& error) {
        const std::string message = error.what();
        EXPECT_TRUE(message.find("truncated") != std::string::npos ||
                    message.find("end of") != std::string::npos ||
                    message.find("header") != std::string::npos)
            << name << " cut to " << length << ": " << message;
      }
    }
  }
}

TEST_F(LmStreamTest, TruncatedLongerFilesNameTheFrameWhereTheyEnd) {
  ENCODEC_REQUIRE_REFERENCE_KERNELS();  // the golden LM files decode only with their probabilities
  const std::string bytes =
      testing::read_file_bytes(testing::golden_path("cases/music_stereo_48k_24kbps_lm.ecdc"));
  for (size_t cut = 1; cut < bytes.size() - 200; cut += 397) {
    try {
      decompress_golden(bytes.substr(0, bytes.size() - cut));
      ADD_FAILURE() << "cut by " << cut << " bytes decoded";
    } catch (const EcdcFormatError& error) {
      const std::string message = error.what();
      EXPECT_NE(message.find("truncated"), std::string::npos) << message;
      EXPECT_NE(message.find("chunk"), std::string::npos) << message;
    }
  }
}

TEST_F(LmStreamTest, CorruptLmDataDecodesOrFailsCleanly) {
  const std::string bytes =
      testing::read_file_bytes(testing::golden_path("cases/speech_24k_6kbps_lm.ecdc"));
  std::istringstream header_in(bytes);
  read_ecdc_header(header_in);
  const size_t body = static_cast<size_t>(header_in.tellg());
  std::mt19937 random(21);
  int failed = 0, decoded = 0;
  for (int trial = 0; trial < 30; ++trial) {
    std::string damaged = bytes;
    for (int flips = 0; flips < 1 + trial % 4; ++flips) {
      damaged[body + random() % (bytes.size() - body)] ^= static_cast<char>(1 << (random() % 8));
    }
    try {
      decompress_golden(damaged);
      ++decoded;  // other codes, same length: nothing detects that
    } catch (const EcdcFormatError&) {
      ++failed;
    }
  }
  std::cout << "[ corrupt  ] " << failed << " of 30 damaged files detected, " << decoded
            << " decoded to other audio\n";
}

TEST_F(LmStreamTest, AHugeClaimedLengthEndsWithTheBytesNotTheClaim) {
  // "al" claims about 11 hours; the LM-coded data is that of 0.004 s.
  std::string bytes = testing::read_file_bytes(testing::golden_path("cases/tiny_24k_6kbps_lm.ecdc"));
  std::istringstream in(bytes);
  EcdcHeader header = read_ecdc_header(in);
  const std::string body = bytes.substr(static_cast<size_t>(in.tellg()));
  header.audio_length = int64_t{24000} * 3600 * 11;
  std::ostringstream out;
  write_ecdc_header(out, header);
  const auto start = std::chrono::steady_clock::now();
  try {
    decompress_golden(out.str() + body);
    ADD_FAILURE() << "decoded";
  } catch (const EcdcFormatError& error) {
    EXPECT_NE(std::string(error.what()).find("truncated LM-coded data"), std::string::npos)
        << error.what();
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 20.0);
}

}  // namespace
}  // namespace encodec
