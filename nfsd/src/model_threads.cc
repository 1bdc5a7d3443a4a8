// model_threads.cc -- the classic server design, for the A/B: blocking
// sockets, a reader thread per connection, a pool of worker threads, and a
// sleep/wakeup hand-off (mutex + condition variable) between them.
//
// Model: an acceptor thread per listening socket accepts connections and
// starts a reader thread for each.  The reader reassembles records into the
// connection's free slots (blocking in recv), queues each complete record
// on the global work queue and wakes a worker; with every slot busy it
// sleeps until one is released (back-pressure).  A worker runs serve_call
// (blocking system calls, pread for READ data) into its own reply buffer,
// writes the reply with blocking send under the connection's send lock, and
// releases the slot.  The reader closes the connection on EOF, an error or
// a framing error, after its in-flight requests finish.
//
// Locking: `work_lock` guards the work queue; each connection's `lock`
// guards its free slots and in-flight count, `send_lock` serialises
// replies.  Order: never two at once, except send_lock held while taking
// nothing else.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <list>
#include <thread>
#include <vector>

#include "internal.h"
#include "kcont/nfsd/transport.h"
#include "listen.h"

namespace kc::nfs {

namespace {

struct tconn;

struct tslot {
  tconn *conn = nullptr;
  uint8_t *buf = nullptr;
  size_t len = 0;
};

struct tconn {
  int fd = -1;
  sockaddr_storage peer{};
  std::thread reader;
  std::mutex lock;
  std::condition_variable cv;
  std::vector<tslot> slots;
  std::vector<tslot *> free_slots;
  uint32_t in_flight = 0;
  std::mutex send_lock;
  bool broken = false;  // a send failed: stop reading
  std::atomic<bool> done{false};
  void *mem = nullptr;
  size_t mem_len = 0;
};

class threads_transport final : public transport {
 public:
  threads_transport(server &s, const transport_config &c) : srv_(s), cfg_(c) {}
  ~threads_transport() override { stop(); }

  int start(std::string *err) override {
    for (int i = 0; i < 2; i++) {
      const sockaddr_storage &a = i == 0 ? cfg_.nfs_addr : cfg_.mount_addr;
      int fd = listen_socket(a, cfg_.addr_len, false, i == 0 ? "NFS" : "MOUNT", err);
      if (fd < 0) {
        stop();
        return EADDRINUSE;
      }
      listen_fds_.push_back(fd);
    }
    for (uint32_t i = 0; i < cfg_.threads; i++) workers_.emplace_back([this] { worker(); });
    for (int fd : listen_fds_) acceptors_.emplace_back([this, fd] { acceptor(fd); });
    return 0;
  }

  void stop() override {
    if (stopped_.exchange(true)) return;
    for (int fd : listen_fds_) shutdown(fd, SHUT_RDWR);
    for (auto &t : acceptors_) t.join();
    for (int fd : listen_fds_) close(fd);
    // Readers stop taking requests; in-flight ones finish (the reader waits
    // for them before it closes its socket).
    {
      std::lock_guard<std::mutex> g(conns_lock_);
      for (auto &c : conns_) shutdown(c->fd, SHUT_RD);
    }
    reap(true);
    {
      std::lock_guard<std::mutex> g(work_lock_);
      stopping_ = true;
    }
    work_cv_.notify_all();
    for (auto &t : workers_) t.join();
    workers_.clear();
  }

  std::string describe() override {
    std::lock_guard<std::mutex> g(conns_lock_);
    return "threads model: " + std::to_string(conns_.size()) + " connections, " +
           std::to_string(cfg_.threads) + " workers";
  }

 private:
  void acceptor(int lfd) {
    for (;;) {
      sockaddr_storage peer;
      socklen_t len = sizeof peer;
      int fd = accept4(lfd, reinterpret_cast<sockaddr *>(&peer), &len, SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
          continue;
        }
        return;  // shut down
      }
      reap(false);
      std::lock_guard<std::mutex> g(conns_lock_);
      if (stopped_ || conns_.size() >= cfg_.max_conns) {
        close(fd);
        continue;
      }
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      auto c = std::make_unique<tconn>();
      c->fd = fd;
      c->peer = peer;
      c->mem_len = size_t(cfg_.slots) * srv_.cfg.max_record;
      c->mem = mmap(nullptr, c->mem_len, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (c->mem == MAP_FAILED) {
        close(fd);
        continue;
      }
      c->slots.resize(cfg_.slots);
      for (uint32_t i = 0; i < cfg_.slots; i++) {
        c->slots[i].conn = c.get();
        c->slots[i].buf = static_cast<uint8_t *>(c->mem) + size_t(i) * srv_.cfg.max_record;
        c->free_slots.push_back(&c->slots[i]);
      }
      srv_.stats.connections.fetch_add(1, std::memory_order_relaxed);
      tconn *raw = c.get();
      c->reader = std::thread([this, raw] { reader(raw); });
      conns_.push_back(std::move(c));
    }
  }

  // Joins finished readers (all of them with `all`) and frees them.
  void reap(bool all) {
    std::list<std::unique_ptr<tconn>> dead;
    {
      std::lock_guard<std::mutex> g(conns_lock_);
      for (auto it = conns_.begin(); it != conns_.end();) {
        if (all || (*it)->done) {
          dead.push_back(std::move(*it));
          it = conns_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto &c : dead) {
      c->reader.join();
      munmap(c->mem, c->mem_len);
    }
  }

  void reader(tconn *c) {
    record_reader rd;
    tslot *cur = nullptr;
    for (;;) {
      if (!cur) {
        std::unique_lock<std::mutex> g(c->lock);
        c->cv.wait(g, [c] { return !c->free_slots.empty() || c->broken; });
        if (c->broken) break;
        cur = c->free_slots.back();
        c->free_slots.pop_back();
        rd.begin(cur->buf, srv_.cfg.max_record);
      }
      size_t want;
      uint8_t *p = rd.want(&want);
      ssize_t n = recv(c->fd, p, want, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      auto r = rd.commit(size_t(n));
      if (r == record_reader::too_big || r == record_reader::bad_fragment) {
        srv_.stats.bad_records.fetch_add(1, std::memory_order_relaxed);
        break;
      }
      if (r != record_reader::record) continue;
      cur->len = rd.length();
      {
        std::lock_guard<std::mutex> g(c->lock);
        c->in_flight++;
      }
      {
        std::lock_guard<std::mutex> g(work_lock_);
        work_.push_back(cur);
      }
      work_cv_.notify_one();
      cur = nullptr;
    }
    // Wait for in-flight requests (their replies may still go out), then
    // close.
    {
      std::unique_lock<std::mutex> g(c->lock);
      c->cv.wait(g, [c] { return c->in_flight == 0; });
    }
    close(c->fd);
    c->done = true;
  }

  void worker() {
    std::vector<uint8_t> reply(THREADS_REPLY_BUFFER);
    for (;;) {
      tslot *s;
      {
        std::unique_lock<std::mutex> g(work_lock_);
        work_cv_.wait(g, [this] { return stopping_ || !work_.empty(); });
        if (work_.empty()) return;
        s = work_.front();
        work_.pop_front();
      }
      tconn *c = s->conn;
      request req;
      req.rec = s->buf;
      req.len = s->len;
      req.peer = c->peer;
      req.out = xdr_out(reply.data(), reply.size());
      serve_result r = serve_call(srv_, req);
      bool failed = r == serve_result::close;
      if (r == serve_result::reply) {
        std::lock_guard<std::mutex> g(c->send_lock);
        failed = !send_all(c->fd, req.out.data(), req.out.size());
      }
      std::lock_guard<std::mutex> g(c->lock);
      if (failed && !c->broken) {
        c->broken = true;
        shutdown(c->fd, SHUT_RDWR);
      }
      c->free_slots.push_back(s);
      c->in_flight--;
      c->cv.notify_all();
    }
  }

  static bool send_all(int fd, const uint8_t *p, size_t n) {
    while (n > 0) {
      ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
      if (k < 0 && errno == EINTR) continue;
      if (k <= 0) return false;
      p += k;
      n -= size_t(k);
    }
    return true;
  }

  server &srv_;
  transport_config cfg_;
  std::vector<int> listen_fds_;
  std::vector<std::thread> acceptors_, workers_;
  std::mutex conns_lock_;
  std::list<std::unique_ptr<tconn>> conns_;
  std::mutex work_lock_;
  std::condition_variable work_cv_;
  std::deque<tslot *> work_;
  bool stopping_ = false;
  std::atomic<bool> stopped_{false};
};

}  // namespace

std::unique_ptr<transport> make_threads_transport(server &srv, const transport_config &cfg) {
  return std::make_unique<threads_transport>(srv, cfg);
}

}  // namespace kc::nfs
