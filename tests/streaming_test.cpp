// The streaming engine against the offline fast path on the golden inputs and
// checkpoint: the same codes and the same audio, bit for bit, for any block
// size, bandwidth schedule, and alone or batched.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

#include "encodec/audio_io.h"
#include "encodec/encodec.h"
#include "encodec/streaming.h"
#include "golden_cases.h"
#include "model_weights.h"

namespace encodec {
namespace {

using testing::GoldenCase;

std::vector<GoldenCase> streaming_cases() {
  std::vector<GoldenCase> cases;
  for (const GoldenCase& golden : testing::golden_cases()) {
    if (golden.model == "encodec_24khz") cases.push_back(golden);
  }
  return cases;
}

EncodecModel fast_model(double bandwidth_kbps, Precision precision = Precision::kFp32) {
  EncodecModel model = testing::golden_model("encodec_24khz");
  model.set_kernels(Kernels::kFast);
  model.set_precision(precision);
  model.set_target_bandwidth(bandwidth_kbps);
  return model;
}

std::vector<float> mono_samples(const GoldenCase& golden) {
  const Audio audio = read_audio(testing::golden_path(golden.input));
  const torch::Tensor samples = audio.samples[0].contiguous();
  return std::vector<float>(samples.data_ptr<float>(), samples.data_ptr<float>() + samples.numel());
}

torch::Tensor as_wav(const std::vector<float>& samples) {
  return torch::from_blob(const_cast<float*>(samples.data()),
                          {1, 1, static_cast<int64_t>(samples.size())})
      .clone();
}

// Codes [K, T] of frames that all have K codebooks.
torch::Tensor frames_to_codes(const std::vector<CodeFrame>& frames) {
  if (frames.empty()) return torch::empty({0, 0}, torch::kInt64);
  torch::Tensor codes = torch::empty({frames.front().num_codebooks, static_cast<int64_t>(frames.size())},
                                     torch::kInt64);
  for (size_t t = 0; t < frames.size(); ++t) {
    for (int level = 0; level < frames[t].num_codebooks; ++level) codes[level][t] = frames[t].codes[level];
  }
  return codes;
}

std::vector<CodeFrame> codes_to_frames(const torch::Tensor& codes) {
  std::vector<CodeFrame> frames(codes.size(1));
  for (int64_t t = 0; t < codes.size(1); ++t) {
    frames[t].num_codebooks = static_cast<int>(codes.size(0));
    for (int64_t level = 0; level < codes.size(0); ++level) {
      frames[t].codes[level] = static_cast<int32_t>(codes[level][t].item<int64_t>());
    }
  }
  return frames;
}

std::vector<CodeFrame> stream_encode(StreamingEncoder& encoder, const std::vector<float>& samples,
                                     int64_t block) {
  std::vector<CodeFrame> frames;
  CodeFrame frame;
  for (size_t offset = 0; offset < samples.size(); offset += block) {
    const int64_t count = std::min<int64_t>(block, samples.size() - offset);
    encoder.push(samples.data() + offset, count);
    while (encoder.pop(&frame)) frames.push_back(frame);
  }
  encoder.finish();
  while (encoder.pop(&frame)) frames.push_back(frame);
  return frames;
}

// Appends the decoder's ready audio to `audio`.
void drain(StreamingDecoder& decoder, std::vector<float>& audio) {
  const size_t old = audio.size();
  audio.resize(old + decoder.samples_ready());
  decoder.pop(audio.data() + old, static_cast<int64_t>(audio.size() - old));
}

std::vector<float> stream_decode(StreamingDecoder& decoder, const std::vector<CodeFrame>& frames) {
  std::vector<float> audio;
  for (const CodeFrame& frame : frames) {
    decoder.push(frame);
    drain(decoder, audio);
  }
  decoder.finish();
  drain(decoder, audio);
  return audio;
}

// Skips a bf16 test where bf16 cannot run.
#define REQUIRE_PRECISION(precision)                                         \
  do {                                                                       \
    if ((precision) == Precision::kBf16 && !bf16_unavailable_reason().empty()) { \
      GTEST_SKIP() << bf16_unavailable_reason();                             \
    }                                                                        \
  } while (0)

// Every golden 24 kHz case in both precisions: bf16 streams equal bf16 files
// bit for bit too (its products have one fixed order as well).
class StreamingGoldenTest : public ::testing::TestWithParam<std::tuple<GoldenCase, Precision>> {
 protected:
  void SetUp() override {
    ENCODEC_REQUIRE_GOLDEN();
    REQUIRE_PRECISION(std::get<1>(GetParam()));
  }
};

TEST_P(StreamingGoldenTest, CodesEqualOfflineForAnyBlockSize) {
  const auto& [golden, precision] = GetParam();
  const EncodecModel model = fast_model(golden.bandwidth_kbps, precision);
  const std::vector<float> samples = mono_samples(golden);
  const torch::Tensor offline = testing::concatenated_codes(model.encode(as_wav(samples)));
  std::vector<int64_t> blocks = {160, 320, 441, 4096};
  if (samples.size() <= 30000) blocks.push_back(1);
  for (int64_t block : blocks) {
    StreamingEncoder encoder(model);
    const torch::Tensor streamed = frames_to_codes(stream_encode(encoder, samples, block));
    ASSERT_EQ(streamed.sizes(), offline.sizes()) << "block " << block;
    EXPECT_TRUE(torch::equal(streamed, offline)) << "block " << block << ": "
        << streamed.ne(offline).sum().item<int64_t>() << " codes differ";
  }
  // Where the fast kernels equal the reference (up to 12 kbps on this model),
  // the streamed codes are the golden ones too.
  if (golden.bandwidth_kbps <= 12.0 && precision == Precision::kFp32) {
    const torch::Tensor expected = testing::load_npy(testing::golden_path(golden.codes));
    EXPECT_TRUE(torch::equal(offline, expected.reshape(offline.sizes())));
  }
}

TEST_P(StreamingGoldenTest, AudioEqualsOfflineDecode) {
  const auto& [golden, precision] = GetParam();
  const EncodecModel model = fast_model(golden.bandwidth_kbps, precision);
  const std::vector<float> samples = mono_samples(golden);
  const std::vector<EncodedFrame> encoded = model.encode(as_wav(samples));
  const torch::Tensor offline = model.decode(encoded).flatten();
  StreamingDecoder decoder(model);
  const std::vector<float> streamed =
      stream_decode(decoder, codes_to_frames(testing::concatenated_codes(encoded)));
  ASSERT_EQ(static_cast<int64_t>(streamed.size()), offline.numel());
  const torch::Tensor difference = (torch::from_blob(const_cast<float*>(streamed.data()),
                                                     {offline.numel()}) - offline).abs();
  const double max_error = difference.numel() ? difference.max().item<double>() : 0.0;
  EXPECT_LE(max_error, 1e-5);
  EXPECT_EQ(max_error, 0.0) << "the streamed audio should equal the offline decode bit for bit";

  // Frames pushed in groups give the same audio as one at a time.
  const std::vector<CodeFrame> frames = codes_to_frames(testing::concatenated_codes(encoded));
  StreamingDecoder grouped(model);
  std::vector<float> audio;
  for (size_t first = 0; first < frames.size(); first += 5) {
    grouped.push(frames.data() + first, std::min<int64_t>(5, frames.size() - first));
    drain(grouped, audio);
  }
  grouped.finish();
  drain(grouped, audio);
  EXPECT_EQ(audio, streamed);
}

INSTANTIATE_TEST_SUITE_P(Golden, StreamingGoldenTest,
                         ::testing::Combine(::testing::ValuesIn(streaming_cases()),
                                            ::testing::Values(Precision::kFp32, Precision::kBf16)),
                         [](const auto& info) {
                           const bool bf16 = std::get<1>(info.param) == Precision::kBf16;
                           return std::get<0>(info.param).label + (bf16 ? "_bf16" : "");
                         });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(StreamingGoldenTest);

class StreamingTest : public ::testing::Test {
 protected:
  void SetUp() override { ENCODEC_REQUIRE_GOLDEN(); }
  // The golden speech: the longest natural input.
  std::vector<float> speech() const {
    for (const GoldenCase& golden : streaming_cases()) {
      if (golden.input.find("speech") != std::string::npos) return mono_samples(golden);
    }
    return {};
  }
  // How a StreamBatcher spreads its batch over threads.
  struct BatcherLayout {
    int threads = 1;
    int64_t min_streams_per_lane = StreamBatcher::kDefaultMinStreamsPerLane;
    // tick() (the decoder side one tick behind) instead of encode_tick(), decode_tick().
    bool combined_tick = false;
  };
  // Streams joining, leaving and skipping ticks of a StreamBatcher against the
  // same streams alone, in `precision`; `lanes_seen` gets the lane counts its ticks ran on.
  void expect_batched_streams_equal_streams_alone(Precision precision, BatcherLayout layout,
                                                  std::set<int64_t>* lanes_seen) const;
};

TEST_F(StreamingTest, BandwidthChangesBetweenFrames) {
  const std::vector<float> samples = speech();
  ASSERT_FALSE(samples.empty());
  const EncodecModel full = fast_model(24.0);
  const torch::Tensor offline = testing::concatenated_codes(full.encode(as_wav(samples)));
  StreamingEncoder encoder(full);
  const std::vector<double> schedule = {1.5, 24.0, 6.0, 3.0, 12.0};
  std::vector<CodeFrame> frames;
  CodeFrame frame;
  size_t offset = 0;
  for (int step = 0; offset < samples.size(); ++step) {
    encoder.set_bandwidth(schedule[step % schedule.size()]);
    const int64_t count = std::min<int64_t>(700, samples.size() - offset);
    encoder.push(samples.data() + offset, count);
    offset += count;
    while (encoder.pop(&frame)) frames.push_back(frame);
  }
  encoder.finish();
  while (encoder.pop(&frame)) frames.push_back(frame);
  ASSERT_EQ(static_cast<int64_t>(frames.size()), offline.size(1));
  std::set<int> seen;
  for (size_t t = 0; t < frames.size(); ++t) {
    seen.insert(frames[t].num_codebooks);
    // A level's code does not depend on the levels after it.
    for (int level = 0; level < frames[t].num_codebooks; ++level) {
      ASSERT_EQ(frames[t].codes[level], offline[level][t].item<int64_t>()) << "frame " << t;
    }
  }
  EXPECT_GE(seen.size(), 4u) << "the schedule should have reached several bandwidths";
}

// A batched stream ended with finish_audio / finish_codes ends as a
// StreamingEncoder / StreamingDecoder ends with finish(): the same last frames
// (the partial frame padded as the offline path pads it) and the same flushed
// audio, while another stream of the batch goes on.
TEST_F(StreamingTest, BatcherFinishEqualsFinishAlone) {
  const std::vector<float> samples = speech();
  ASSERT_FALSE(samples.empty());
  const EncodecModel model = fast_model(6.0);
  StreamingEncoder alone_encoder(model);
  alone_encoder.push(samples.data(), static_cast<int64_t>(samples.size()));
  alone_encoder.finish();
  std::vector<CodeFrame> expected_codes;
  CodeFrame frame;
  while (alone_encoder.pop(&frame)) expected_codes.push_back(frame);
  StreamingDecoder alone_decoder(model);
  for (const CodeFrame& code : expected_codes) alone_decoder.push(code);
  alone_decoder.finish();
  std::vector<float> expected_audio(static_cast<size_t>(alone_decoder.samples_ready()));
  alone_decoder.pop(expected_audio.data(), static_cast<int64_t>(expected_audio.size()));

  StreamBatcher batcher(model, /*min_streams_per_lane=*/1);
  const auto ending = batcher.open_stream(), other = batcher.open_stream();
  batcher.set_bandwidth(ending, 6.0);
  batcher.set_bandwidth(other, 6.0);
  std::vector<CodeFrame> codes;
  std::vector<float> audio;
  const int64_t hop = model.config().hop_length();
  size_t fed = 0, decoded = 0;
  // Blocks that are not frames, so that a partial frame is pending at the end.
  for (size_t at = 0; at < samples.size(); at += 441) {
    const int64_t count = std::min<int64_t>(441, samples.size() - at);
    batcher.push_audio(ending, samples.data() + at, count);
    batcher.push_audio(other, samples.data() + at, count);
    fed += count;
    while (static_cast<int64_t>(fed) >= hop * static_cast<int64_t>(decoded + 1)) {
      // One tick per complete frame of the ending stream; its codes go to its decoder side.
      batcher.encode_tick();
      while (batcher.pop_codes(ending, &frame)) {
        codes.push_back(frame);
        batcher.push_codes(ending, frame);
      }
      CodeFrame discard;
      while (batcher.pop_codes(other, &discard)) {
      }
      batcher.decode_tick();
      ++decoded;
    }
  }
  batcher.finish_audio(ending);
  while (batcher.pop_codes(ending, &frame)) {
    codes.push_back(frame);
    batcher.push_codes(ending, frame);
  }
  batcher.finish_codes(ending);
  audio.resize(static_cast<size_t>(batcher.samples_ready(ending)));
  batcher.pop_audio(ending, audio.data(), static_cast<int64_t>(audio.size()));

  ASSERT_EQ(codes.size(), expected_codes.size());
  for (size_t t = 0; t < codes.size(); ++t) {
    for (int level = 0; level < codes[t].num_codebooks; ++level) {
      ASSERT_EQ(codes[t].codes[level], expected_codes[t].codes[level]) << "frame " << t;
    }
  }
  EXPECT_EQ(audio, expected_audio);
  EXPECT_THROW(batcher.push_audio(ending, samples.data(), 1), std::logic_error);
  EXPECT_THROW(batcher.push_lost(ending), std::logic_error);
  // The other stream is unaffected and goes on.
  batcher.push_audio(other, samples.data(), hop);
  batcher.encode_tick();
}

// The start delay the reflect padding imposes: the encoder's last conv (at the
// frame rate) reads `kernel` frames, so the first codes need that many frames
// of audio; the decoder's first conv likewise needs that many frames of codes.
// Afterwards every frame comes out as soon as it is complete.
TEST_F(StreamingTest, StartDelayThenOneFramePerFrame) {
  const EncodecModel model = fast_model(6.0);
  const int64_t hop = model.config().hop_length();
  const auto kernel_of = [](const fast::Layer& layer) {
    return std::get<fast::Conv1d>(layer).reference().kernel_size();
  };
  const int64_t encoder_delay = kernel_of(model.weights().fast_encoder->layers().back());
  const int64_t decoder_delay = kernel_of(model.weights().fast_decoder->layers().front());
  const std::vector<float> samples = speech();
  StreamingEncoder encoder(model);
  std::vector<CodeFrame> frames;
  CodeFrame frame;
  for (int64_t pushed = 1; pushed <= 20 * hop; ++pushed) {
    encoder.push(&samples[pushed - 1], 1);
    const int64_t expected = pushed < encoder_delay * hop ? 0 : pushed / hop;
    while (encoder.pop(&frame)) frames.push_back(frame);
    ASSERT_EQ(static_cast<int64_t>(frames.size()), expected) << "after " << pushed << " samples";
  }
  StreamingDecoder decoder(model);
  for (int64_t t = 0; t < 13; ++t) {
    decoder.push(frames[t]);
    const int64_t expected = t + 1 < decoder_delay ? 0 : (t + 1) * hop;
    ASSERT_EQ(decoder.samples_ready(), expected) << "after " << t + 1 << " frames";
  }
}

TEST_F(StreamingTest, ResetStartsANewStream) {
  const std::vector<float> samples = speech();
  const EncodecModel model = fast_model(6.0);
  StreamingEncoder encoder(model);
  const std::vector<CodeFrame> first = stream_encode(encoder, samples, 999);
  encoder.reset();
  const std::vector<CodeFrame> second = stream_encode(encoder, samples, 320);
  EXPECT_TRUE(torch::equal(frames_to_codes(first), frames_to_codes(second)));

  StreamingDecoder decoder(model);
  const std::vector<float> audio = stream_decode(decoder, first);
  decoder.reset();
  EXPECT_EQ(stream_decode(decoder, first), audio);
}

TEST_F(StreamingTest, RefusesModelsThatCannotStream) {
  EXPECT_THROW(StreamingEncoder{testing::golden_model("encodec_48khz")}, std::invalid_argument);
  EXPECT_THROW(StreamingDecoder{testing::golden_model("encodec_48khz")}, std::invalid_argument);
  EXPECT_THROW(StreamBatcher{testing::golden_model("encodec_48khz")}, std::invalid_argument);
  // Streaming runs the fast kernels, which a reference-only model lacks.
  const EncodecModel reference_only = EncodecModel::from_checkpoint(
      testing::golden_path("encodec_24khz-random.th"), "encodec_24khz", KernelSet::kReferenceOnly);
  EXPECT_THROW(StreamingEncoder{reference_only}, std::invalid_argument);
  EXPECT_THROW(StreamingDecoder{reference_only}, std::invalid_argument);
  EXPECT_THROW(StreamBatcher{reference_only}, std::invalid_argument);
}

TEST_F(StreamingTest, DecoderRejectsInvalidFrames) {
  StreamingDecoder decoder(fast_model(6.0));
  CodeFrame frame;
  EXPECT_THROW(decoder.push(frame), std::invalid_argument);  // no codebooks
  frame.num_codebooks = 2;
  frame.codes[1] = 1 << 20;
  EXPECT_THROW(decoder.push(frame), std::invalid_argument);
  frame.codes[1] = -1;
  EXPECT_THROW(decoder.push(frame), std::invalid_argument);
}

// Streams that open at different ticks, run at different bandwidths, skip
// ticks and close early give the codes and audio they give alone.
void StreamingTest::expect_batched_streams_equal_streams_alone(Precision precision, BatcherLayout layout,
                                                                std::set<int64_t>* lanes_seen) const {
  const int threads_before = torch::get_num_threads();
  torch::set_num_threads(layout.threads);
  struct RestoreThreads {
    int count;
    ~RestoreThreads() { torch::set_num_threads(count); }
  } restore{threads_before};
  const std::vector<float> samples = speech();
  const EncodecModel model = fast_model(6.0, precision);
  const int64_t hop = model.config().hop_length();
  constexpr int kStreams = 5;
  const double bandwidths[kStreams] = {6.0, 1.5, 24.0, 6.0, 12.0};
  const int open_tick[kStreams] = {0, 0, 3, 9, 12};
  const int close_tick[kStreams] = {1000, 1000, 1000, 60, 1000};
  const int skip_tick[kStreams] = {-1, 20, -1, 30, -1};  // a tick with no frame
  // Each stream's audio: the speech from a different offset.
  std::vector<std::vector<float>> inputs(kStreams);
  for (int s = 0; s < kStreams; ++s) {
    inputs[s].assign(samples.begin() + s * 1111, samples.end());
    inputs[s].resize(inputs[s].size() / hop * hop);
  }
  StreamBatcher batcher(model, layout.min_streams_per_lane);
  std::vector<StreamBatcher::StreamId> ids(kStreams, -1);
  std::vector<std::vector<CodeFrame>> batched_codes(kStreams);
  std::vector<std::vector<float>> batched_audio(kStreams);
  std::vector<size_t> fed(kStreams, 0);
  int64_t most_batched = 0;
  constexpr int kTicks = 200;
  for (int tick = 0; tick <= kTicks; ++tick) {
    for (int s = 0; s < kStreams; ++s) {
      if (tick == open_tick[s]) {
        ids[s] = batcher.open_stream();
        batcher.set_bandwidth(ids[s], bandwidths[s]);
      }
      if (tick == close_tick[s] && ids[s] >= 0) {
        batcher.close_stream(ids[s]);
        ids[s] = -1;
      }
      if (ids[s] < 0 || tick == skip_tick[s] || tick == kTicks || fed[s] >= inputs[s].size()) continue;
      batcher.push_audio(ids[s], inputs[s].data() + fed[s], hop);
      fed[s] += hop;
    }
    // Each stream's new codes go to its decoder side: decoded in the same tick
    // (a duplex call), or in the next one by tick(); one tick more decodes the
    // last codes.
    const bool last_tick = tick == kTicks;
    if (layout.combined_tick) {
      batcher.tick();
    } else if (!last_tick) {
      batcher.encode_tick();
    }
    most_batched = std::max(most_batched, batcher.batched_encoder_streams());
    lanes_seen->insert(batcher.encoder_lanes());
    for (int s = 0; s < kStreams; ++s) {
      if (ids[s] < 0) continue;
      CodeFrame frame;
      while (batcher.pop_codes(ids[s], &frame)) {
        batched_codes[s].push_back(frame);
        batcher.push_codes(ids[s], frame);
      }
    }
    if (!layout.combined_tick && !last_tick) batcher.decode_tick();
    lanes_seen->insert(batcher.decoder_lanes());
    for (int s = 0; s < kStreams; ++s) {
      if (ids[s] < 0) continue;
      std::vector<float> chunk(batcher.samples_ready(ids[s]));
      batcher.pop_audio(ids[s], chunk.data(), chunk.size());
      batched_audio[s].insert(batched_audio[s].end(), chunk.begin(), chunk.end());
    }
  }
  EXPECT_GE(most_batched, 3) << "streams should have run batched";
  for (int s = 0; s < kStreams; ++s) {
    // The same stream alone, fed the same frames.
    EncodecModel own = model;
    own.set_target_bandwidth(bandwidths[s]);
    StreamingEncoder encoder(own);
    StreamingDecoder decoder(own);
    std::vector<CodeFrame> codes;
    std::vector<float> audio;
    CodeFrame frame;
    for (size_t offset = 0; offset < fed[s]; offset += hop) {
      encoder.push(inputs[s].data() + offset, hop);
      while (encoder.pop(&frame)) {
        codes.push_back(frame);
        decoder.push(frame);
      }
      drain(decoder, audio);
    }
    ASSERT_EQ(batched_codes[s].size(), codes.size()) << "stream " << s;
    ASSERT_GT(codes.size(), 10u);
    EXPECT_TRUE(torch::equal(frames_to_codes(batched_codes[s]), frames_to_codes(codes))) << "stream " << s;
    // The decoder side takes one frame per tick, so a stream closed early
    // leaves the frames of its start burst undecoded.
    if (close_tick[s] >= kTicks) ASSERT_EQ(batched_audio[s].size(), audio.size()) << "stream " << s;
    ASSERT_GT(batched_audio[s].size(), 30u * hop);
    ASSERT_LE(batched_audio[s].size(), audio.size());
    EXPECT_TRUE(std::equal(batched_audio[s].begin(), batched_audio[s].end(), audio.begin()))
        << "stream " << s;
  }
}

TEST_F(StreamingTest, BatchedStreamsEqualStreamsAlone) {
  std::set<int64_t> lanes;
  expect_batched_streams_equal_streams_alone(Precision::kFp32, BatcherLayout{}, &lanes);
  EXPECT_EQ(lanes, (std::set<int64_t>{0, 1})) << "one thread: one lane (0 before the streams join)";
}

TEST_F(StreamingTest, BatchedBf16StreamsEqualBf16StreamsAlone) {
  REQUIRE_PRECISION(Precision::kBf16);
  std::set<int64_t> lanes;
  expect_batched_streams_equal_streams_alone(Precision::kBf16, BatcherLayout{}, &lanes);
}

// Two threads, a lane from every 2 batched streams: the batch runs as one lane
// (2-3 streams), then two at once (4-5), and back as streams skip and close,
// streams moving between lanes on the way; nothing changes in the results.
TEST_F(StreamingTest, BatchedStreamsOnLanesEqualStreamsAlone) {
  std::set<int64_t> lanes;
  expect_batched_streams_equal_streams_alone(Precision::kFp32, BatcherLayout{2, 2}, &lanes);
  EXPECT_TRUE(lanes.count(1) && lanes.count(2)) << "the batch should have run on one lane and on two";
  EXPECT_FALSE(lanes.count(3)) << "no more lanes than threads";
}

TEST_F(StreamingTest, BatchedBf16StreamsOnLanesEqualBf16StreamsAlone) {
  REQUIRE_PRECISION(Precision::kBf16);
  std::set<int64_t> lanes;
  expect_batched_streams_equal_streams_alone(Precision::kBf16, BatcherLayout{2, 1}, &lanes);
  EXPECT_TRUE(lanes.count(2)) << "the batch should have run on two lanes";
}

// tick(): both sides at once, the decoder side taking the codes of the tick
// before. On 2 threads one lane per side; on 4, two per side once each has 2 streams.
TEST_F(StreamingTest, CombinedTicksEqualStreamsAlone) {
  std::set<int64_t> lanes;
  expect_batched_streams_equal_streams_alone(Precision::kFp32, BatcherLayout{2, 2, true}, &lanes);
  EXPECT_FALSE(lanes.count(2)) << "2 threads: one lane per side";
  lanes.clear();
  expect_batched_streams_equal_streams_alone(Precision::kFp32, BatcherLayout{4, 2, true}, &lanes);
  EXPECT_TRUE(lanes.count(1) && lanes.count(2)) << "4 threads: one lane per side, then two";
}

TEST_F(StreamingTest, BatcherRefusesLanesOfNoStreams) {
  EXPECT_THROW(StreamBatcher(fast_model(6.0), 0), std::invalid_argument);
}

// Lost frames: no NaN, the timing kept (hop samples per frame, lost or not),
// no click larger than the signal's own steps, silence after a long loss, and
// the stream back in step once frames arrive again.
TEST_F(StreamingTest, ConcealsLostFramesSmoothly) {
  const std::vector<float> samples = speech();
  const EncodecModel model = fast_model(6.0);
  const int64_t hop = model.config().hop_length();
  StreamingEncoder encoder(model);
  const std::vector<CodeFrame> frames = stream_encode(encoder, samples, 320);
  StreamingDecoder clean(model);
  const std::vector<float> reference = stream_decode(clean, frames);

  auto lost = [](size_t t) { return (t >= 40 && t < 42) || (t >= 70 && t < 85) || t == 100; };
  StreamingDecoder decoder(model);
  std::vector<float> audio;
  for (size_t t = 0; t < frames.size(); ++t) {
    lost(t) ? decoder.push_lost() : decoder.push(frames[t]);
    drain(decoder, audio);
  }
  decoder.finish();
  drain(decoder, audio);

  ASSERT_EQ(audio.size(), reference.size());
  ASSERT_EQ(static_cast<int64_t>(audio.size()), static_cast<int64_t>(frames.size()) * hop);
  float largest_step = 0, largest_concealed_step = 0;
  for (size_t i = 1; i < reference.size(); ++i) {
    ASSERT_TRUE(std::isfinite(audio[i])) << "sample " << i;
    largest_step = std::max(largest_step, std::abs(reference[i] - reference[i - 1]));
    largest_concealed_step = std::max(largest_concealed_step, std::abs(audio[i] - audio[i - 1]));
  }
  EXPECT_LE(largest_concealed_step, 1.5f * largest_step) << "concealment clicks";
  // Frames 78..84 are the 9th to 15th losses in a row: silent.
  for (int64_t i = 78 * hop; i < 85 * hop; ++i) ASSERT_EQ(audio[i], 0.0f) << "sample " << i;
  // Before the first loss the audio is untouched.
  for (int64_t i = 0; i < 40 * hop; ++i) ASSERT_EQ(audio[i], reference[i]) << "sample " << i;
  // After the losses the decoder tracks the clean decode again (its LSTM
  // state converges): the last second is close to the clean one.
  const int64_t from = static_cast<int64_t>(audio.size()) - 75 * hop;
  double error = 0, energy = 0;
  for (size_t i = from; i < audio.size(); ++i) {
    error += std::pow(audio[i] - reference[i], 2);
    energy += std::pow(reference[i], 2);
  }
  EXPECT_LT(error, 0.01 * energy) << "the decoder should recover after the losses";
}

}  // namespace
}  // namespace encodec
