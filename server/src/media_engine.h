// The server's compute thread: every model pass for every stream the server
// encodes (ROLE_ENCODE sessions: PCM in, codes out) or decodes (senders heard
// by members that asked for Opus), one StreamBatcher tick for all of them.
//
// I/O threads hand work over through a lock-free queue of preallocated jobs
// (no allocation, no lock, never blocking: a full queue refuses the job and it
// is counted); the rare control calls (a session opens or leaves) go through a
// mutex-protected list. The compute thread owns the batcher, the Opus encoders
// and every per-stream buffer; it sends its results itself (Peer::send never blocks).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include <boost/lockfree/queue.hpp>

#include "encodec/net/opus_codec.h"
#include "encodec/net/wire.h"
#include "encodec/streaming.h"
#include "peer.h"

namespace encodec::server {

struct EngineCounters {
  std::atomic<uint64_t> ticks{0};
  std::atomic<uint64_t> encoded_frames{0};
  std::atomic<uint64_t> transcoded_frames{0};
  std::atomic<uint64_t> dropped_jobs{0};
  std::atomic<uint64_t> media_out{0};
  std::atomic<uint64_t> send_dropped{0};
};

class MediaEngine {
 public:
  static constexpr int kMaxJobSamples = 1024;
  static constexpr size_t kQueueJobs = 2048;

  MediaEngine(const EncodecModel& model, int threads, EngineCounters& counters);
  ~MediaEngine();
  void start();
  void stop();

  // Control (any thread; may allocate).
  void open_encoder(uint64_t session, std::shared_ptr<Peer> peer, double bandwidth_kbps);
  void add_opus_receiver(uint64_t sender, uint32_t sender_stream_id, uint64_t receiver,
                         std::shared_ptr<Peer> peer, int bitrate_bps, int frame_samples);
  // Removes the session as encoder, sender and receiver.
  void remove_session(uint64_t session);

  // Media (any thread; no allocation, no lock). False: the queue is full (counted).
  bool submit_pcm(uint64_t session, const uint8_t* pcm16le, size_t samples, bool end_of_stream);
  bool submit_codes(uint64_t sender, uint32_t sequence, uint64_t capture_time_us,
                    const int32_t* codes, int num_codebooks, double bandwidth_kbps,
                    bool end_of_stream);

 private:
  struct Job {
    enum class Kind { kPcm, kCodes } kind = Kind::kPcm;
    uint64_t session = 0;
    uint32_t sequence = 0;
    uint64_t capture_time_us = 0;
    double bandwidth_kbps = 0.0;
    bool end_of_stream = false;
    int count = 0;  // samples (kPcm) or codebooks (kCodes)
    int32_t codes[kMaxStreamCodebooks];
    float samples[kMaxJobSamples];
  };
  struct Control;
  struct Encoder;
  struct OpusReceiver;
  struct Decoder;

  Job* take_free_job();
  void run();
  bool drain_controls();
  bool drain_jobs();
  void handle_pcm(const Job& job);
  void handle_codes(const Job& job);
  bool has_frame_pending() const;
  void tick();
  void collect_codes(Encoder& encoder, bool last);
  void send_codes(Encoder& encoder, const CodeFrame* frame, bool end_of_stream);
  void collect_audio(Decoder& decoder);
  void finish_ended_streams();

  EncodecModel model_;
  int threads_;
  int hop_;
  EngineCounters& counters_;
  std::unique_ptr<StreamBatcher> batcher_;

  std::vector<Job> job_pool_;
  boost::lockfree::queue<Job*, boost::lockfree::capacity<kQueueJobs>> free_jobs_;
  boost::lockfree::queue<Job*, boost::lockfree::capacity<kQueueJobs>> jobs_;

  std::mutex control_mutex_;
  std::vector<std::unique_ptr<Control>> controls_;
  std::vector<std::unique_ptr<Control>> controls_taken_;

  std::mutex wake_mutex_;
  std::condition_variable wake_;
  std::atomic<bool> running_{false};
  std::thread thread_;

  // Owned by the compute thread.
  std::unordered_map<uint64_t, std::unique_ptr<Encoder>> encoders_;
  std::unordered_map<uint64_t, std::unique_ptr<Decoder>> decoders_;  // by sender session
  wire::Envelope out_;  // reused for every message sent
  std::vector<float> audio_scratch_;
  std::vector<uint8_t> packet_scratch_;
};

}  // namespace encodec::server
