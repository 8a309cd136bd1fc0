// The multi-cell CPM's Monte Carlo step (slm.models.potts, slm.models.act) as one compiled loop.
//
// The same algorithm as CellularPotts._sweep / _resolve, with the same noise: for each of the four site
// classes, every target site of the class reads its direction, acceptance noise and priority from `noise`;
// the active proposals (source id != target id) get their contact (and act) energy change from the lattice
// as it was when the class began, and are then decided one at a time in decreasing priority, each with the
// volumes and surfaces its predecessors left. The torch path decides the same proposals in rounds whose
// outcome is this order, so both give the same decisions. Arithmetic follows the torch path's float32
// operations in their order (no fused multiply-add), so the acceptance probabilities agree to the last bit
// wherever the energies are exact in float32.
//
// With a tape, `potts_backward` is reverse-mode differentiation of the step: it walks the recorded
// decisions backwards, undoing each one's volume and surface change to recover the state it saw, and
// propagates the adjoints through dH as autograd does through the torch path, for the straight-through
// (0), Gumbel-sigmoid (1) and score-function (2) estimators.
//
// Plain C ABI (ctypes); lattices of a batch run on separate threads.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace {

const int MOORE[8][2] = {{-1, 0}, {0, -1}, {0, 1}, {1, 0}, {-1, -1}, {-1, 1}, {1, -1}, {1, 1}};
const int CLASSES[4][2] = {{0, 0}, {1, 1}, {0, 1}, {1, 0}};

struct Shape {
    int B, H, W, C, K, nbh, has_surface, act;
};

// A lattice's parameters, unpacked from its row of the (B, K K + 4 K + 1) parameter array: contact (K x K), then
// per type V_t, lambda_V, S_t, lambda_S, then T; and its own lambda_act, max_act (the act model's class of that
// lattice).
struct Params {
    const float *J, *vt, *lamv, *st, *lams;
    float T, lam_act = 0.0f, max_act = 1.0f;
    // the act term's two integer memories and their weights (the relaxation of max_act)
    float m0 = 1.0f, m1 = 2.0f, f = 0.0f, c0 = 0.0f, c1 = 0.0f;
    Params(const float* p, int K) {
        J = p; vt = p + K * K; lamv = vt + K; st = lamv + K; lams = st + K;
        T = lams[K];
    }
    Params with_act(const float* act) const {
        Params P = *this;
        P.lam_act = act[0];
        P.max_act = act[1];
        P.m0 = std::max(std::floor(P.max_act), 1.0f);
        P.m1 = P.m0 + 1.0f;
        P.f = P.max_act - P.m0;
        P.c0 = (1.0f - P.f) * (P.lam_act / P.m0);
        P.c1 = P.f * (P.lam_act / P.m1);
        return P;
    }
};

// The tape of one MCS, per class, lattice and class site (n = H W / 4 sites per class).
struct Tape {
    int32_t* order;   // (4, B, n): the decided proposals' sites, in the order they were decided
    int32_t* count;   // (4, B): how many
    int32_t* cells;   // (4, B, n, 2): source and target ids
    uint8_t* counts;  // (4, B, n, K + 2): energy neighbours of each type, then those equal to source, target
    uint8_t* flag;    // (4, B, n): 1 decided and refused, 2 decided and accepted, 0 otherwise
    float* extra;     // (4, B, n, 6), act only: GM(s) - GM(t) at both memories, the source's and target's
                      // positions of the target site (near each cell's centre)
};

inline int wrap_index(int i, int n) { return i < 0 ? i + n : (i >= n ? i - n : i); }

inline float wrap_offset(float offset, float period) {
    return offset - period * std::floor(offset / period + 0.5f);
}

// GM of the activities at memory `m` of the sites of x's cell among x and its Moore neighbours.
float geometric_activity(const int64_t* labels, const float* age, int H, int W, int i, int j, float m) {
    int64_t id = labels[i * W + j];
    if (id == 0) return 0.0f;
    float log_sum = 0.0f, count = 0.0f;
    bool zero = false;
    for (int o = -1; o < 8; ++o) {
        int di = o < 0 ? 0 : MOORE[o][0], dj = o < 0 ? 0 : MOORE[o][1];
        // torch.roll by (di, dj) reads the site at minus the offset
        int y = wrap_index(i - di, H), x = wrap_index(j - dj, W);
        if (labels[y * W + x] != id) continue;
        float near = std::max(m - age[y * W + x], 0.0f);
        log_sum = log_sum + std::log(std::max(near, 1e-30f));
        count = count + 1.0f;
        zero = zero || near <= 0.0f;
    }
    return zero ? 0.0f : std::exp(log_sum / count);
}

// dH of the volume and surface terms, added to the class-fixed part, exactly as _resolve adds them.
inline float full_energy(float fixed, const Params& P, const float* V, const float* S, int64_t s, int64_t t,
                         int ts, int tt, float ds, float dt, bool has_surface) {
    float off_s = V[s] - P.vt[ts], off_t = V[t] - P.vt[tt];
    float d_h = fixed + P.lamv[ts] * (2.0f * off_s + 1.0f);
    d_h = d_h + P.lamv[tt] * (1.0f - 2.0f * off_t);
    if (has_surface) {
        float e_s = S[s] - P.st[ts], e_t = S[t] - P.st[tt];
        float a = e_s + ds, b = e_t + dt;
        d_h = d_h + P.lams[ts] * (a * a - e_s * e_s);
        d_h = d_h + P.lams[tt] * (b * b - e_t * e_t);
    }
    return d_h;
}

// The class-fixed part of dH: contact, from the neighbour counts, as CellularPotts._sweep forms it.
inline float contact_energy(const Params& P, const uint8_t* cq, int K, int ts, int tt, int same_s, int same_t) {
    float field_s = 0.0f, field_t = 0.0f;
    for (int q = 0; q < K; ++q) {
        field_s = field_s + P.J[ts * K + q] * (float)cq[q];
        field_t = field_t + P.J[tt * K + q] * (float)cq[q];
    }
    float d_h = field_s - field_t;
    d_h = d_h - P.J[ts * K + ts] * (float)same_s;
    return d_h + P.J[tt * K + tt] * (float)same_t;
}

inline float act_energy(const Params& P, float d0, float d1) { return (-(P.c0 * d0)) - P.c1 * d1; }

inline float acceptance(float d_h, float T) {
    float x = std::min(std::max(d_h / T, 0.0f), 50.0f);
    return std::exp(-x);
}

struct Proposal {
    float priority;
    int32_t site;
};

inline bool before(const Proposal& x, const Proposal& y) {
    return x.priority > y.priority || (x.priority == y.priority && x.site < y.site);
}

// Sort by decreasing priority (ties: by site): the priorities are uniform in [0, 1), so one pass into as many
// buckets as proposals, then an insertion sort of each (about one proposal per bucket), is linear.
void by_priority(std::vector<Proposal>& active, std::vector<Proposal>& sorted, std::vector<int32_t>& starts) {
    const int n = (int)active.size();
    if (n < 2) return;
    starts.assign(n + 1, 0);
    auto bucket = [n](float priority) { return std::min(n - 1, std::max(0, n - 1 - (int)(priority * (float)n))); };
    for (const Proposal& p : active) starts[bucket(p.priority) + 1]++;
    for (int i = 0; i < n; ++i) starts[i + 1] += starts[i];
    sorted.resize(n);
    for (const Proposal& p : active) sorted[starts[bucket(p.priority)]++] = p;
    for (int i = 1; i < n; ++i) {
        Proposal p = sorted[i];
        int j = i - 1;
        for (; j >= 0 && before(p, sorted[j]); --j) sorted[j + 1] = sorted[j];
        sorted[j + 1] = p;
    }
    active.swap(sorted);
}

void mcs_lattice(const Shape& sh, int b, int64_t* labels_all, const int64_t* types_all, float* volume_all,
                 float* surface_all, const float* noise, const Params& shared, const float* act, float* age_all,
                 float* moment_all, Tape* tape) {
    const Params P = sh.act ? shared.with_act(act + 2 * b) : shared;
    const int H = sh.H, W = sh.W, K = sh.K, C = sh.C, h = H / 2, w = W / 2, n = h * w, B = sh.B;
    int64_t* labels = labels_all + (int64_t)b * H * W;
    const int64_t* types = types_all + (int64_t)b * C;
    float* V = volume_all + (int64_t)b * C;
    float* S = surface_all + (int64_t)b * C;
    float* age = sh.act ? age_all + (int64_t)b * H * W : nullptr;
    float* moment = sh.act ? moment_all + (int64_t)b * C * 2 : nullptr;
    std::vector<Proposal> active, sorted;
    std::vector<int32_t> starts;
    active.reserve(n);
    std::vector<float> fixed(n), accept_noise(n), centre(sh.act ? 2 * C : 0);
    std::vector<int64_t> src(n), tgt(n);
    std::vector<uint8_t> state(n);
    std::vector<uint8_t> local_counts(tape ? 0 : (size_t)n * (K + 2));
    for (int c = 0; c < 4; ++c) {
        const int a = CLASSES[c][0], bb = CLASSES[c][1];
        const float* u0 = noise + ((int64_t)(c * 2 + 0) * B + b) * n;
        const float* u1 = noise + ((int64_t)(c * 2 + 1) * B + b) * n;
        const int64_t base = ((int64_t)c * B + b) * n;
        uint8_t* counts = tape ? tape->counts + base * (K + 2) : local_counts.data();
        float* extra = tape && sh.act ? tape->extra + base * 6 : nullptr;
        std::fill(state.begin(), state.end(), 0);
        active.clear();
        for (int k = 0; k < n; ++k) {
            const int ti = a + 2 * (k / w), tj = bb + 2 * (k % w);
            float uu = u0[k] * 8.0f;
            int d = std::min((int)uu, 7);
            const int si = wrap_index(ti + MOORE[d][0], H), sj = wrap_index(tj + MOORE[d][1], W);
            const int64_t s = labels[si * W + sj], t = labels[ti * W + tj];
            if (s == t) continue;
            uint8_t* cq = counts + (int64_t)k * (K + 2);
            std::memset(cq, 0, K + 2);
            int same_s = 0, same_t = 0, cells_near = 0;
            for (int o = 0; o < sh.nbh; ++o) {
                int64_t id = labels[wrap_index(ti + MOORE[o][0], H) * W + wrap_index(tj + MOORE[o][1], W)];
                int q = (int)types[id];
                if (q > 0) { cq[q]++; cells_near++; }
                same_s += id == s;
                same_t += id == t;
            }
            cq[0] = (uint8_t)(sh.nbh - cells_near);
            cq[K] = (uint8_t)same_s;
            cq[K + 1] = (uint8_t)same_t;
            float d_h = contact_energy(P, cq, K, (int)types[s], (int)types[t], same_s, same_t);
            if (sh.act) {
                float d0 = geometric_activity(labels, age, H, W, si, sj, P.m0) -
                           geometric_activity(labels, age, H, W, ti, tj, P.m0);
                float d1 = geometric_activity(labels, age, H, W, si, sj, P.m1) -
                           geometric_activity(labels, age, H, W, ti, tj, P.m1);
                d_h = d_h + act_energy(P, d0, d1);
                if (extra) { extra[k * 6] = d0; extra[k * 6 + 1] = d1; }
            }
            fixed[k] = d_h;
            accept_noise[k] = uu - (float)d;
            src[k] = s;
            tgt[k] = t;
            active.push_back({u1[k], k});
        }
        by_priority(active, sorted, starts);
        int decided = 0;
        for (const Proposal& prop : active) {
            const int k = prop.site;
            const int ti = a + 2 * (k / w), tj = bb + 2 * (k % w);
            const int64_t s = src[k], t = tgt[k];
            if (t != 0 && !(V[t] > 1.5f)) continue;  // a cell keeps its last site
            const uint8_t* cq = counts + (int64_t)k * (K + 2);
            const int ts = (int)types[s], tt = (int)types[t];
            const float ds = (float)(sh.nbh - 2 * cq[K]), dt = (float)(2 * cq[K + 1] - sh.nbh);
            float p = acceptance(full_energy(fixed[k], P, V, S, s, t, ts, tt, ds, dt, sh.has_surface), P.T);
            bool z = p - accept_noise[k] > 0.0f;
            state[k] = z ? 2 : 1;
            if (tape) {
                tape->order[base + decided] = k;
                tape->cells[(base + k) * 2] = (int32_t)s;
                tape->cells[(base + k) * 2 + 1] = (int32_t)t;
            }
            decided++;
            if (!z) continue;
            V[s] += 1.0f;
            V[t] -= 1.0f;
            if (sh.has_surface) { S[s] += ds; S[t] += dt; }
            labels[ti * W + tj] = s;
            if (sh.act) age[ti * W + tj] = 0.0f;
        }
        if (tape) {
            tape->count[c * B + b] = decided;
            std::memcpy(tape->flag + base, state.data(), n);
        }
        if (!sh.act) continue;
        // The moments: every decided copy moves its target site, taken at its image nearest each cell's
        // centre (the moment before the class over the volume after it, as ActPotts._copied).
        for (int id = 0; id < C; ++id) {
            float v = std::max(V[id], 1.0f);
            centre[2 * id] = moment[2 * id] / v;
            centre[2 * id + 1] = moment[2 * id + 1] / v;
        }
        for (const Proposal& prop : active) {
            const int k = prop.site;
            if (state[k] == 0) continue;
            const int ti = a + 2 * (k / w), tj = bb + 2 * (k % w);
            const int64_t ends[2] = {src[k], tgt[k]};
            float pos[4];
            for (int e = 0; e < 2; ++e) {
                const float* near = centre.data() + 2 * ends[e];
                pos[2 * e] = near[0] + wrap_offset((float)ti - near[0], (float)H);
                pos[2 * e + 1] = near[1] + wrap_offset((float)tj - near[1], (float)W);
            }
            if (extra) std::memcpy(extra + k * 6 + 2, pos, 4 * sizeof(float));
            if (state[k] != 2) continue;
            if (ends[0] > 0) { moment[2 * ends[0]] += pos[0]; moment[2 * ends[0] + 1] += pos[1]; }
            if (ends[1] > 0) { moment[2 * ends[1]] -= pos[2]; moment[2 * ends[1] + 1] -= pos[3]; }
        }
    }
    if (sh.act)
        for (int i = 0; i < H * W; ++i) age[i] += 1.0f;
}

// Reverse mode through one lattice's MCS from its tape: the adjoints of the volumes and surfaces it ended
// with (and of the gradient path and moments, which the decisions only add to) back to those it started
// with and to the parameters, in the layout of `params`.
void backward_lattice(const Shape& sh, int b, const int64_t* types_all, const float* volume_out,
                      const float* surface_out, const float* noise, const Params& shared, const float* act,
                      const Tape& tape, int estimator, float tau, const float* g_volume, const float* g_surface,
                      const float* g_path, const float* g_moment, const float* g_logp, float* gi_volume,
                      float* gi_surface, float* g_params, float* g_act) {
    const Params P = sh.act ? shared.with_act(act + 2 * b) : shared;
    const int K = sh.K, C = sh.C, B = sh.B, n = (sh.H / 2) * (sh.W / 2);
    const int64_t* types = types_all + (int64_t)b * C;
    std::vector<float> V(volume_out + (int64_t)b * C, volume_out + (int64_t)(b + 1) * C);
    std::vector<float> S(surface_out + (int64_t)b * C, surface_out + (int64_t)(b + 1) * C);
    float* gV = gi_volume + (int64_t)b * C;
    float* gS = gi_surface + (int64_t)b * C;
    for (int i = 0; i < C; ++i) {
        gV[i] = g_volume ? g_volume[(int64_t)b * C + i] : 0.0f;
        gS[i] = g_surface ? g_surface[(int64_t)b * C + i] : 0.0f;
    }
    const float* gpath = g_path ? g_path + (int64_t)b * K * K : nullptr;
    const float* gmom = g_moment ? g_moment + (int64_t)b * C * 2 : nullptr;
    const float glogp = g_logp ? g_logp[b] : 0.0f;
    float* gJ = g_params + (int64_t)b * (K * K + 4 * K + 1);
    float *gvt = gJ + K * K, *glamv = gvt + K, *gst = glamv + K, *glams = gst + K, *gT = glams + K;
    const float eps = 1.1920929e-07f, tiny = 1.17549435e-38f;
    for (int c = 3; c >= 0; --c) {
        const int64_t base = ((int64_t)c * B + b) * n;
        const float* u0 = noise + ((int64_t)(c * 2 + 0) * B + b) * n;
        for (int idx = tape.count[c * B + b] - 1; idx >= 0; --idx) {
            const int k = tape.order[base + idx];
            const int64_t s = tape.cells[(base + k) * 2], t = tape.cells[(base + k) * 2 + 1];
            const bool z = tape.flag[base + k] == 2;
            const uint8_t* cq = tape.counts + (base + k) * (K + 2);
            const int ts = (int)types[s], tt = (int)types[t], same_s = cq[K], same_t = cq[K + 1];
            const float ds = (float)(sh.nbh - 2 * same_s), dt = (float)(2 * same_t - sh.nbh);
            if (z) {
                V[s] -= 1.0f;
                V[t] += 1.0f;
                if (sh.has_surface) { S[s] -= ds; S[t] -= dt; }
            }
            const float* extra = sh.act ? tape.extra + (base + k) * 6 : nullptr;
            float fixed = contact_energy(P, cq, K, ts, tt, same_s, same_t);
            if (extra) fixed = fixed + act_energy(P, extra[0], extra[1]);
            const float d_h = full_energy(fixed, P, V.data(), S.data(), s, t, ts, tt, ds, dt, sh.has_surface);
            const float x = d_h / P.T, p = acceptance(d_h, P.T);
            float g_p;
            if (estimator == 2) {
                const float one = z ? 1.0f : 0.0f;
                g_p = glogp * (one / std::max(p, tiny) - (1.0f - one) / std::max(1.0f - p, tiny));
            } else {
                float g_z = gV[s] - gV[t];
                if (sh.has_surface) g_z += gS[s] * ds + gS[t] * dt;
                if (gpath)
                    for (int q = 0; q < K; ++q)
                        g_z += gpath[ts * K + q] * ((float)cq[q] - (q == ts ? (float)same_s : 0.0f)) -
                               gpath[tt * K + q] * ((float)cq[q] - (q == tt ? (float)same_t : 0.0f));
                if (gmom && extra) {
                    if (s > 0) g_z += gmom[2 * s] * extra[2] + gmom[2 * s + 1] * extra[3];
                    if (t > 0) g_z -= gmom[2 * t] * extra[4] + gmom[2 * t + 1] * extra[5];
                }
                float slope = 1.0f;
                if (estimator == 1) {
                    float uu = u0[k] * 8.0f;
                    const float u = uu - (float)std::min((int)uu, 7);
                    const float pc = std::min(std::max(p, eps), 1.0f - eps), uc = std::min(std::max(u, eps), 1.0f - eps);
                    const float logit = (std::log(pc / (1.0f - pc)) - std::log(uc / (1.0f - uc))) / tau;
                    const float soft = 1.0f / (1.0f + std::exp(-logit));
                    slope = (p >= eps && p <= 1.0f - eps) ? soft * (1.0f - soft) / tau / (pc * (1.0f - pc)) : 0.0f;
                }
                g_p = g_z * slope;
            }
            const float g_x = (x >= 0.0f && x <= 50.0f) ? -p * g_p : 0.0f;
            const float g_h = g_x / P.T;
            *gT += -g_x * d_h / (P.T * P.T);
            const float off_s = V[s] - P.vt[ts], off_t = V[t] - P.vt[tt];
            glamv[ts] += g_h * (2.0f * off_s + 1.0f);
            gV[s] += 2.0f * g_h * P.lamv[ts];
            gvt[ts] -= 2.0f * g_h * P.lamv[ts];
            glamv[tt] += g_h * (1.0f - 2.0f * off_t);
            gV[t] -= 2.0f * g_h * P.lamv[tt];
            gvt[tt] += 2.0f * g_h * P.lamv[tt];
            if (sh.has_surface) {
                const int64_t ends[2] = {s, t};
                const int end_types[2] = {ts, tt};
                const float change[2] = {ds, dt};
                for (int e = 0; e < 2; ++e) {
                    const float ex = S[ends[e]] - P.st[end_types[e]];
                    glams[end_types[e]] += g_h * ((ex + change[e]) * (ex + change[e]) - ex * ex);
                    const float g_e = g_h * P.lams[end_types[e]] * 2.0f * change[e];
                    gS[ends[e]] += g_e;
                    gst[end_types[e]] -= g_e;
                }
            }
            for (int q = 0; q < K; ++q) {
                gJ[ts * K + q] += g_h * (float)cq[q];
                gJ[tt * K + q] -= g_h * (float)cq[q];
            }
            gJ[ts * K + ts] -= g_h * (float)same_s;
            gJ[tt * K + tt] += g_h * (float)same_t;
            if (extra) {
                g_act[2 * b] += g_h * (-(1.0f - P.f) / P.m0 * extra[0] - P.f / P.m1 * extra[1]);
                g_act[2 * b + 1] += g_h * (P.lam_act / P.m0 * extra[0] - P.lam_act / P.m1 * extra[1]);
            }
        }
    }
}

template <typename F>
void over_lattices(int B, int threads, F&& body) {
    threads = std::max(1, std::min(threads, B));
    if (threads == 1) {
        for (int b = 0; b < B; ++b) body(b);
        return;
    }
    std::vector<std::thread> pool;
    for (int r = 0; r < threads; ++r)
        pool.emplace_back([&, r] {
            for (int b = r; b < B; b += threads) body(b);
        });
    for (auto& th : pool) th.join();
}

}  // namespace

extern "C" {

// Clusters of equal non-zero values, 4-connected on the torus, per lattice (union-find with path halving).
void slm_count_clusters(int B, int H, int W, int threads, const int64_t* values, int64_t* out) {
    over_lattices(B, threads, [&](int b) {
        const int64_t* v = values + (int64_t)b * H * W;
        std::vector<int32_t> parent(H * W);
        for (int i = 0; i < H * W; ++i) parent[i] = i;
        auto find = [&](int32_t x) {
            while (parent[x] != x) x = parent[x] = parent[parent[x]];
            return x;
        };
        for (int i = 0; i < H; ++i)
            for (int j = 0; j < W; ++j) {
                const int x = i * W + j;
                if (v[x] == 0) continue;
                const int neighbours[2] = {i * W + (j + 1) % W, ((i + 1) % H) * W + j};
                for (int y : neighbours)
                    if (v[y] == v[x]) {
                        const int32_t rx = find(x), ry = find(y);
                        if (rx != ry) parent[std::max(rx, ry)] = std::min(rx, ry);
                    }
            }
        int64_t count = 0;
        for (int x = 0; x < H * W; ++x) count += v[x] != 0 && find(x) == x;
        out[b] = count;
    });
}

void slm_potts_mcs(int B, int H, int W, int C, int K, int nbh, int has_surface, int act, int threads,
                   int64_t* labels, const int64_t* types, float* volume, float* surface, const float* noise,
                   const float* params, const float* act_params, float* age, float* moment, int32_t* order, int32_t* count,
                   int32_t* cells, uint8_t* counts, uint8_t* flag, float* extra) {
    Shape sh{B, H, W, C, K, nbh, has_surface, act};
    Tape tape{order, count, cells, counts, flag, extra};
    Tape* tp = order ? &tape : nullptr;
    over_lattices(B, threads, [&](int b) {
        Params P(params + (int64_t)b * (K * K + 4 * K + 1), K);
        mcs_lattice(sh, b, labels, types, volume, surface, noise, P, act_params, age, moment, tp);
    });
}

void slm_potts_backward(int B, int H, int W, int C, int K, int nbh, int has_surface, int act, int threads,
                        const int64_t* types, const float* volume_out, const float* surface_out, const float* noise,
                        const float* params, const float* act_params, const int32_t* order, const int32_t* count, const int32_t* cells,
                        const uint8_t* counts, const uint8_t* flag, const float* extra, int estimator, float tau,
                        const float* g_volume, const float* g_surface, const float* g_path, const float* g_moment,
                        const float* g_logp, float* gi_volume, float* gi_surface, float* g_params, float* g_act) {
    Shape sh{B, H, W, C, K, nbh, has_surface, act};
    Tape tape{const_cast<int32_t*>(order), const_cast<int32_t*>(count), const_cast<int32_t*>(cells),
              const_cast<uint8_t*>(counts), const_cast<uint8_t*>(flag), const_cast<float*>(extra)};
    over_lattices(B, threads, [&](int b) {
        Params P(params + (int64_t)b * (K * K + 4 * K + 1), K);
        backward_lattice(sh, b, types, volume_out, surface_out, noise, P, act_params, tape, estimator, tau, g_volume,
                         g_surface, g_path, g_moment, g_logp, gi_volume, gi_surface, g_params, g_act);
    });
}

}  // extern "C"
