// The server's compute thread: every model pass for every stream the server
// encodes (ROLE_ENCODE sessions: PCM in, codes out; members that send Opus:
// libopus decodes their packets, the encoder makes codes that the server
// forwards to their room) or decodes (senders heard by members that asked for
// Opus), one StreamBatcher tick for all of them.
//
// Frames from a room (code frames for the transcoder, Opus packets from an
// Opus sender) come over UDP out of order, twice, or never: each such stream
// goes through a small reorder window (net::JitterBuffer::next_in_order) so
// that frames swapped within the reorder window are decoded in order,
// duplicates dropped, and a frame still missing once that many later frames
// are in is concealed (StreamBatcher::push_lost, libopus's concealment).
//
// I/O threads hand work over through a lock-free queue of preallocated jobs
// (no allocation, no lock, never blocking: a full queue refuses the job and it
// is counted); the rare control calls (a session opens or leaves) go through a
// mutex-protected list. A control takes effect in its place among the jobs: after
// every job submitted before it and before any submitted after it, so that a
// member that leaves right after its last packets (an Opus sender's Goodbye)
// has those packets encoded, and its stream finished, before it is removed.
// The compute thread owns the batcher, the Opus encoders and every per-stream
// buffer; it sends its results itself (Peer::send never blocks).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include <boost/lockfree/queue.hpp>

#include "encodec/net/jitter_buffer.h"
#include "encodec/net/opus_codec.h"
#include "encodec/net/wire.h"
#include "encodec/server.h"
#include "encodec/streaming.h"
#include "peer.h"

namespace encodec::server {

// A histogram of durations, lock-free (counts per bucket of kComputeTickBucketSeconds).
struct DurationHistogram {
  std::array<std::atomic<uint64_t>, kComputeTickBuckets + 1> counts{};  // the last: beyond them all
  std::atomic<uint64_t> total_ns{0};
  void observe(double seconds) {
    size_t bucket = 0;
    while (bucket < kComputeTickBuckets && seconds > kComputeTickBucketSeconds[bucket]) ++bucket;
    counts[bucket].fetch_add(1, std::memory_order_relaxed);
    total_ns.fetch_add(static_cast<uint64_t>(seconds * 1e9), std::memory_order_relaxed);
  }
};

struct EngineCounters {
  std::atomic<uint64_t> ticks{0};
  DurationHistogram tick_time;             // each tick's compute (batcher pass and results)
  std::atomic<int64_t> queued_jobs{0};     // submitted, not yet taken by the compute thread
  std::atomic<uint64_t> encoded_frames{0};
  std::atomic<uint64_t> transcoded_frames{0};
  std::atomic<uint64_t> dropped_jobs{0};
  // Media the compute thread had no stream for (its session had left), or that
  // a reorder window refused as too large: dropped.
  std::atomic<uint64_t> discarded_jobs{0};
  std::atomic<uint64_t> media_out{0};
  std::atomic<uint64_t> send_dropped{0};
  // The reorder windows (code frames before the transcoder, Opus senders' packets):
  std::atomic<uint64_t> reorder_duplicates{0};  // a frame already decoded or buffered
  std::atomic<uint64_t> reorder_late{0};        // came after its slot was concealed (or older)
  // Code frames the transcoder concealed (never came within the reorder window).
  std::atomic<uint64_t> transcode_concealed{0};
  // Opus senders: packets decoded, missing ones concealed, ones libopus refused
  // (concealed in their place), and the code frames made from their audio.
  std::atomic<uint64_t> opus_in_frames{0};
  std::atomic<uint64_t> opus_in_concealed{0};
  std::atomic<uint64_t> opus_in_malformed{0};
  std::atomic<uint64_t> opus_in_encoded_frames{0};
};

class MediaEngine {
 public:
  static constexpr int kMaxJobSamples = 1024;
  static constexpr size_t kQueueJobs = 2048;
  // The largest Opus packet of one frame (RFC 6716 3.2.1: 1275 bytes).
  static constexpr size_t kMaxOpusPacketBytes = 1275;
  // At a stream's start its window waits for this many frames (the sender's
  // start burst leaves at once, and jitter swaps its first frames).
  static constexpr int kStartWindowFrames = 4;

  // Where an Opus sender's code frames go: the server forwards them to the
  // sender's room as it forwards a code-sending member's frames. Called on the
  // compute thread; must not block or allocate after warm-up.
  using CodeForwarder = std::function<void(uint64_t sender, const wire::Media& media)>;
  // Told (on the compute thread) when a session's removal has taken effect:
  // whatever the session's streams still held has been sent by then.
  using RemovalListener = std::function<void(uint64_t session)>;

  // After the start, a missing frame is concealed once reorder_window_frames
  // later frames are in (ServerOptions::transcode_reorder_frames).
  MediaEngine(const EncodecModel& model, int threads, int reorder_window_frames, EngineCounters& counters);
  ~MediaEngine();
  // Before start().
  void set_code_forwarder(CodeForwarder forwarder);
  void set_removal_listener(RemovalListener listener);
  void start();
  void stop();

  // Control (any thread; may allocate).
  void open_encoder(uint64_t session, std::shared_ptr<Peer> peer, double bandwidth_kbps);
  // A room member that sends Opus packets of `frame_samples` samples: they are
  // decoded and encoded at `bandwidth_kbps`, the codes go to the forwarder.
  void open_opus_sender(uint64_t session, int frame_samples, double bandwidth_kbps);
  void add_opus_receiver(uint64_t sender, uint32_t sender_stream_id, uint64_t receiver,
                         std::shared_ptr<Peer> peer, int bitrate_bps, int frame_samples);
  // Removes the session as encoder, sender and receiver, once the jobs
  // submitted before are done. An Opus sender's stream and a code sender's
  // transcode are finished first (their last frames go out, with the end mark);
  // a ROLE_ENCODE session's codes are not (nobody is left to receive them).
  void remove_session(uint64_t session);

  // Media (any thread; no allocation, no lock). False: the queue is full (counted).
  bool submit_pcm(uint64_t session, const uint8_t* pcm16le, size_t samples, bool end_of_stream);
  bool submit_codes(uint64_t sender, uint32_t sequence, uint64_t capture_time_us,
                    const int32_t* codes, int num_codebooks, double bandwidth_kbps,
                    bool end_of_stream);
  // One Opus packet (at most kMaxOpusPacketBytes; empty: an end mark without a frame).
  bool submit_opus(uint64_t sender, uint32_t sequence, uint64_t capture_time_us,
                   const uint8_t* packet, size_t size, bool end_of_stream);

 private:
  struct Job {
    enum class Kind { kPcm, kCodes, kOpus } kind = Kind::kPcm;
    uint64_t session = 0;
    uint32_t sequence = 0;
    uint64_t capture_time_us = 0;
    double bandwidth_kbps = 0.0;
    bool end_of_stream = false;
    int count = 0;  // samples (kPcm), codebooks (kCodes) or packet bytes (kOpus)
    int32_t codes[kMaxStreamCodebooks];
    float samples[kMaxJobSamples];
    // An Opus packet lives in the samples' storage (a job is one kind at a time).
    uint8_t* packet() { return reinterpret_cast<uint8_t*>(samples); }
    const uint8_t* packet() const { return reinterpret_cast<const uint8_t*>(samples); }
  };
  static_assert(kMaxOpusPacketBytes <= sizeof(Job::samples), "an Opus packet fits a job");
  struct Control;
  struct Encoder;
  struct OpusInput;
  struct OpusReceiver;
  struct Decoder;

  Job* take_free_job();
  void enqueue(Job* job);
  void push_control(std::unique_ptr<Control> control);
  void run();
  // Moves newly submitted controls to controls_waiting_, then applies those
  // whose place among the jobs has come. True when one was applied.
  bool apply_due_controls();
  void apply(const Control& control);
  void remove(uint64_t session);
  bool drain_jobs();
  // False when the job's stream is unknown (perhaps not opened yet: its
  // control may still be waiting).
  bool handle(const Job& job);
  bool handle_pcm(const Job& job);
  bool handle_codes(const Job& job);
  bool handle_opus(const Job& job);
  // Takes the decoder's frames in order from its reorder window into the batcher.
  void decode_in_order(Decoder& decoder, bool stream_ended);
  // Decodes the Opus sender's packets in order and pushes the audio to its encoder.
  void encode_in_order(Encoder& encoder, bool stream_ended);
  bool has_frame_pending() const;
  void tick();
  void collect_codes(Encoder& encoder, bool last);
  void send_codes(Encoder& encoder, const CodeFrame* frame, bool end_of_stream);
  void collect_audio(Decoder& decoder);
  // The stream's last frames out, with the end mark (the stream stays open).
  void finish_encoder_stream(Encoder& encoder);
  void finish_decoder_stream(Decoder& decoder);
  void finish_ended_streams();

  EncodecModel model_;
  int threads_;
  int reorder_window_frames_;
  int hop_;
  EngineCounters& counters_;
  CodeForwarder forward_codes_;
  RemovalListener removal_listener_;
  std::unique_ptr<StreamBatcher> batcher_;

  std::vector<Job> job_pool_;
  boost::lockfree::queue<Job*, boost::lockfree::capacity<kQueueJobs>> free_jobs_;
  boost::lockfree::queue<Job*, boost::lockfree::capacity<kQueueJobs>> jobs_;

  // Jobs ever enqueued (counted before the push): a control's place among them.
  std::atomic<uint64_t> jobs_submitted_{0};
  std::mutex control_mutex_;
  std::vector<std::unique_ptr<Control>> controls_;  // under control_mutex_
  std::atomic<bool> controls_submitted_{false};     // controls_ is not empty
  std::vector<std::unique_ptr<Control>> controls_taken_;

  std::mutex wake_mutex_;
  std::condition_variable wake_;
  std::atomic<bool> running_{false};
  std::thread thread_;

  // Owned by the compute thread.
  uint64_t jobs_taken_ = 0;
  std::deque<std::unique_ptr<Control>> controls_waiting_;  // in submission order
  std::unordered_map<uint64_t, std::unique_ptr<Encoder>> encoders_;  // ROLE_ENCODE, Opus senders
  std::unordered_map<uint64_t, std::unique_ptr<Decoder>> decoders_;  // by sender session
  wire::Envelope out_;  // reused for every message sent
  std::vector<float> audio_scratch_;
  std::vector<uint8_t> packet_scratch_;
};

}  // namespace encodec::server
