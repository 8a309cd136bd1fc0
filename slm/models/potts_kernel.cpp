// The multi-cell CPM's Monte Carlo step (slm.models.potts, slm.models.act) as one compiled loop.
//
// Lattices are planes (D = 1: H x W, 8 Moore neighbours) or volumes (D x H x W, 26), both tori; the Moore offsets come
// in slm.lattice.moore_offsets' order (faces first), so that the first 4 or 6 are the von Neumann neighbourhood.
//
// Two schedules of copy attempts (model.schedule):
//
// * RANDOM, the field's (CompuCell3D, Morpheus, Artistoo, glazier): an MCS is N = D H W attempts, each at a uniform
//   random target (with replacement) from a uniform random Moore neighbour as the source, decided one at a time
//   on the current lattice, volumes, surfaces and activities. Two ways to draw the same process:
//   - UNIFORM_TARGETS: literally, three uniforms per attempt (target, direction, acceptance), the stream that
//     slm.studies.potts_reference.sequential_mcs replays attempt for attempt;
//   - BORDER (the default way): only targets with a Moore neighbour of another id can change anything, so the
//     attempts between two of them are skipped in one geometric draw (each attempt hits the border set with
//     probability |border| / N) and the target is uniform in the border set. Exact in distribution (the
//     skipped attempts change nothing), and cheap where the cells are sparse. (Artistoo advances time by the
//     mean 1 / |border| instead of the geometric draw.)
//   Each lattice's random stream is seeded from the MCS's seed and the lattice's index, so the lattices of a
//   batch are independent and any run is reproducible from (seed, lattice, step).
// * SWEEP (planes only; a volume's sweep runs on torch): every site once per MCS in four classes (i mod 2, j mod 2):
//   the vectorised torch path's schedule
//   (CellularPotts._sweep / _resolve), with its noise: a class's active proposals take their contact (and act)
//   energy from the lattice as the class began and are decided one at a time in decreasing priority; the torch
//   path's rounds have that outcome, so both give the same decisions. Arithmetic follows the torch path's
//   float32 operations in their order (no fused multiply-add).
//
// Energies are computed in double under RANDOM (the sequential reference's arithmetic) and in float under SWEEP
// (the torch path's).
//
// With a tape, every decided attempt of the call's MCS is recorded in order (its cells, neighbour counts, acceptance noise and
// decision, and the act term's differences and positions); potts_backward is reverse-mode differentiation
// of the step: it walks the tape backwards, undoing each accepted copy's volume and surface change to
// recover the state it saw, and propagates the adjoints through dH as autograd does through the torch path,
// for the straight-through, Gumbel-sigmoid and score-function estimators.
//
// Plain C ABI (ctypes, one argument struct); lattices of a batch run on separate threads.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace {

// Bumped whenever Args or a function's signature changes; Python refuses a library that reports another.
constexpr int32_t ABI_VERSION = 3;

enum Estimator : int32_t { STE = 0, GUMBEL = 1, SCORE = 2 };
enum Schedule : int32_t { SWEEP = 0, BORDER = 1, UNIFORM_TARGETS = 2 };
enum Decision : uint8_t { UNDECIDED = 0, REFUSED = 1, ACCEPTED = 2 };

constexpr int CLASSES[4][2] = {{0, 0}, {1, 1}, {0, 1}, {1, 0}};
constexpr int MAX_NEAR = 26;        // Moore neighbours of a site in 3D (8 in 2D)
constexpr int LOG_TABLE = 4096;     // activities up to this are looked up, not logged
constexpr float MAX_EXPONENT = 50;  // exp(-50) stands for 0 and keeps results out of subnormals
constexpr double DENSE = 0.2;       // border share above which an MCS draws its targets literally (BORDER)

}  // namespace

extern "C" {

// Every argument of a call, mirrored by slm.models.potts_engine._Args (same order and types).
struct Args {
    int32_t B, D, H, W, C, K, nbh, has_surface, act, threads, schedule, estimator, mcs;
    float tau;
    int64_t* labels;          // (B, D, H, W); D = 1 is a plane (H, W), with no third axis
    const int64_t* types;     // (B, C)
    float* volume;            // (B, C)
    float* surface;           // (B, C)
    const float* noise;       // SWEEP: (4, 2, B, H/2, W/2)
    const int64_t* seeds;     // BORDER, UNIFORM_TARGETS: (mcs,), one per MCS
    const float* params;      // (B, K K + 4 K + 1)
    const float* act_params;  // (B, 2): lambda_act, max_act
    float* age;               // (B, D, H, W)
    float* moment;            // (B, C, dims): dims = 2 (rows, columns) or 3 (depth, rows, columns)
    // The tape of the call's MCS, at most mcs N records per lattice (N = D H W sites: every target once per MCS, or
    // N attempts).
    int32_t* tape_count;      // (B,)
    int32_t* tape_cells;      // (B, mcs N, 2): source and target ids
    uint8_t* tape_counts;     // (B, mcs N, K + 2): energy neighbours of each type, then those equal to s, t
    float* tape_noise;        // (B, mcs N): the acceptance uniform
    uint8_t* tape_decision;   // (B, mcs N): Decision
    float* tape_extra;        // (B, mcs N, extra_width(dims)), act only
    // Backward: adjoints in, gradients out.
    const float* g_volume;
    const float* g_surface;
    const float* g_path;      // (B, K K)
    const float* g_moment;    // (B, C, dims)
    const float* g_logp;      // (B,), score only
    float* gi_volume;
    float* gi_surface;
    float* g_params;
    float* g_act;
};

}  // extern "C"

namespace {

inline int dims_of(const Args& a) { return a.D > 1 ? 3 : 2; }
// act's tape record: GM(s) - GM(t) at both memories, then the target site's position for s and for t.
inline int extra_width(int dims) { return 2 + 2 * dims; }

// The Moore neighbourhood's offsets in a fixed order, the same as slm.lattice.moore_offsets: the faces (von
// Neumann) first, then the others, each group in lexicographic order; and for each offset the index of its negation.
struct Offsets {
    int n = 0;
    int d[MAX_NEAR][3] = {};
    int minus[MAX_NEAR] = {};
    explicit Offsets(int dims) {
        for (int faces = 1; faces >= 0; --faces)
            for (int z = dims == 3 ? -1 : 0; z <= (dims == 3 ? 1 : 0); ++z)
                for (int i = -1; i <= 1; ++i)
                    for (int j = -1; j <= 1; ++j) {
                        const int norm = std::abs(z) + std::abs(i) + std::abs(j);
                        if (norm == 0 || (norm == 1) != (faces == 1)) continue;
                        d[n][0] = z; d[n][1] = i; d[n][2] = j;
                        n++;
                    }
        for (int o = 0; o < n; ++o)
            for (int p = 0; p < n; ++p)
                if (d[p][0] == -d[o][0] && d[p][1] == -d[o][1] && d[p][2] == -d[o][2]) minus[o] = p;
    }
};
const Offsets PLANE(2), SPACE(3);

inline int wrap_index(int i, int n) { return i < 0 ? i + n : (i >= n ? i - n : i); }

inline float wrap_offset(float offset, float period) {
    return offset - period * std::floor(offset / period + 0.5f);
}

// A lattice's parameters, unpacked from its row of the parameter array: contact (K x K), per type V_t,
// lambda_V, S_t, lambda_S, then T; with the act model its lambda_act and max_act, relaxed over two integer
// memories m0 = floor(max_act) and m1 = m0 + 1 with weights 1 - f and f.
struct Params {
    const float *J, *vt, *lamv, *st, *lams;
    float T, lam_act = 0.0f, max_act = 1.0f;
    float m0 = 1.0f, m1 = 2.0f, f = 0.0f, c0 = 0.0f, c1 = 0.0f;
    double c0d = 0.0, c1d = 0.0;  // the same weights in double (the field's schedule computes in double)

    Params(const float* p, int K) {
        J = p; vt = p + K * K; lamv = vt + K; st = lamv + K; lams = st + K;
        T = lams[K];
    }
    void set_act(const float* act) {
        lam_act = act[0];
        max_act = act[1];
        m0 = std::max(std::floor(max_act), 1.0f);
        m1 = m0 + 1.0f;
        f = max_act - m0;
        c0 = (1.0f - f) * (lam_act / m0);
        c1 = f * (lam_act / m1);
        c0d = (1.0 - (double)f) * ((double)lam_act / (double)m0);
        c1d = (double)f * ((double)lam_act / (double)m1);
    }
};

// One lattice of the batch: views of its rows of every array, and its labels as int32 while it is worked on (half
// the memory of torch's int64 in the random accesses; written back by finish()).
struct Lattice {
    int b, D, H, W, n, C, K, nbh, dims, nnb;  // n = D H W sites; nnb Moore neighbours (8 or 26)
    bool has_surface, act;
    int64_t* out;
    std::vector<int32_t> ids;
    int32_t* labels;
    const int64_t* types;
    float *V, *S, *age, *moment;
    const Offsets& offsets;
    Params P;
    std::vector<double> log_table;  // log(k) for integer activities k (the act model)

    Lattice(const Args& a, int b_)
        : b(b_), D(a.D), H(a.H), W(a.W), n(a.D * a.H * a.W), C(a.C), K(a.K), nbh(a.nbh), dims(dims_of(a)),
          nnb(dims == 3 ? 26 : 8), has_surface(a.has_surface), act(a.act),
          out(a.labels + (int64_t)b_ * n), ids(out, out + n), labels(ids.data()),
          types(a.types + (int64_t)b_ * a.C),
          V(a.volume + (int64_t)b_ * a.C), S(a.surface + (int64_t)b_ * a.C),
          age(a.act ? a.age + (int64_t)b_ * n : nullptr),
          moment(a.act ? a.moment + (int64_t)b_ * a.C * dims : nullptr), offsets(dims == 3 ? SPACE : PLANE),
          P(a.params + (int64_t)b_ * (a.K * a.K + 4 * a.K + 1), a.K) {
        if (!act) return;
        P.set_act(a.act_params + 2 * b_);
        const int top = (int)std::min(P.m1, (float)LOG_TABLE);
        log_table.resize(top + 1);
        for (int k = 1; k <= top; ++k) log_table[k] = (double)std::log((float)k);
    }
    void finish() { std::copy(ids.begin(), ids.end(), out); }
    // The Moore neighbour of a site in direction o (Lattice::around's o-th), alone.
    int neighbour(int site, int o) const {
        const int* d = offsets.d[o];
        if (dims == 3) {
            const int plane = H * W, z = site / plane, rest = site - z * plane, i = rest / W, j = rest - i * W;
            return wrap_index(z + d[0], D) * plane + wrap_index(i + d[1], H) * W + wrap_index(j + d[2], W);
        }
        const int i = site / W, j = site - i * W;
        return wrap_index(i + d[1], H) * W + wrap_index(j + d[2], W);
    }
    // The Moore neighbours of a site (8 or 26), in the offsets' order (one division per axis, not per neighbour).
    void around(int site, int* out) const {
        if (dims == 3) {
            const int plane = H * W, z = site / plane, rest = site - z * plane, i = rest / W, j = rest - i * W;
            const int zs[3] = {(z == 0 ? D - 1 : z - 1) * plane, z * plane, (z == D - 1 ? 0 : z + 1) * plane};
            const int is[3] = {(i == 0 ? H - 1 : i - 1) * W, i * W, (i == H - 1 ? 0 : i + 1) * W};
            const int js[3] = {j == 0 ? W - 1 : j - 1, j, j == W - 1 ? 0 : j + 1};
            for (int o = 0; o < 26; ++o)
                out[o] = zs[offsets.d[o][0] + 1] + is[offsets.d[o][1] + 1] + js[offsets.d[o][2] + 1];
            return;
        }
        const int i = site / W, j = site - i * W;
        const int up = (i == 0 ? H - 1 : i - 1) * W, row = i * W, down = (i == H - 1 ? 0 : i + 1) * W;
        const int left = j == 0 ? W - 1 : j - 1, right = j == W - 1 ? 0 : j + 1;
        out[0] = up + j; out[1] = row + left; out[2] = row + right; out[3] = down + j;
        out[4] = up + left; out[5] = up + right; out[6] = down + left; out[7] = down + right;
    }
};

// The neighbours of a target (`near`: Lattice::around) that its copy needs: energy neighbours of each type (cq[0..K-1]), then those equal
// to the source id (cq[K]) and to the target id (cq[K+1]).
void gather(const Lattice& L, const int* near, int64_t s, int64_t t, uint8_t* cq) {
    std::memset(cq, 0, L.K + 2);
    int cells_near = 0;
    for (int o = 0; o < L.nbh; ++o) {
        const int64_t id = L.labels[near[o]];
        const int q = (int)L.types[id];
        if (q > 0) { cq[q]++; cells_near++; }
        cq[L.K] += id == s;
        cq[L.K + 1] += id == t;
    }
    cq[0] = (uint8_t)(L.nbh - cells_near);
}

// The contact part of dH from the neighbour counts, as CellularPotts._sweep forms it.
template <typename R>
R contact_energy(const Params& P, const uint8_t* cq, int K, int ts, int tt) {
    R field_s = 0, field_t = 0;
    for (int q = 0; q < K; ++q) {
        field_s = field_s + (R)P.J[ts * K + q] * (R)cq[q];
        field_t = field_t + (R)P.J[tt * K + q] * (R)cq[q];
    }
    R d_h = field_s - field_t;
    d_h = d_h - (R)P.J[ts * K + ts] * (R)cq[K];
    return d_h + (R)P.J[tt * K + tt] * (R)cq[K + 1];
}

// dH of the volume and surface terms added to the rest, exactly as _resolve adds them.
template <typename R>
R full_energy(R rest, const Params& P, const float* V, const float* S, int64_t s, int64_t t, int ts, int tt,
              float ds, float dt, bool has_surface) {
    const R off_s = (R)V[s] - (R)P.vt[ts], off_t = (R)V[t] - (R)P.vt[tt];
    R d_h = rest + (R)P.lamv[ts] * (R(2) * off_s + R(1));
    d_h = d_h + (R)P.lamv[tt] * (R(1) - R(2) * off_t);
    if (has_surface) {
        const R e_s = (R)S[s] - (R)P.st[ts], e_t = (R)S[t] - (R)P.st[tt];
        const R a = e_s + (R)ds, c = e_t + (R)dt;
        d_h = d_h + (R)P.lams[ts] * (a * a - e_s * e_s);
        d_h = d_h + (R)P.lams[tt] * (c * c - e_t * e_t);
    }
    return d_h;
}

template <typename R>
R acceptance(R d_h, R T) {
    if (d_h <= R(0)) return R(1);  // exp(-0), without the call
    return std::exp(-std::min(d_h / T, R(MAX_EXPONENT)));
}

// GM of the activities at memory m of the sites of x's cell among x and its Moore neighbours (0 on the medium
// or where one of them is 0), the neighbours read as torch.roll reads them (at minus the offset).
template <typename R>
R geometric_activity(const Lattice& L, int site, float m) {
    const int64_t id = L.labels[site];
    if (id == 0) return R(0);
    int ring[MAX_NEAR];
    L.around(site, ring);
    R log_sum = 0, count = 0;
    for (int o = -1; o < L.nnb; ++o) {
        const int y = o < 0 ? site : ring[L.offsets.minus[o]];
        if (L.labels[y] != id) continue;
        const float near = std::max(m - L.age[y], 0.0f);
        if (near <= 0.0f) return R(0);
        const int k = (int)near;
        log_sum = log_sum + ((float)k == near && k < (int)L.log_table.size() ? (R)L.log_table[k]
                                                                               : (R)std::log((R)near));
        count = count + R(1);
    }
    return std::exp(log_sum / count);
}

inline float act_energy(const Params& P, float d0, float d1) { return (-(P.c0 * d0)) - P.c1 * d1; }
inline double act_energy(const Params& P, double d0, double d1) { return (-(P.c0d * d0)) - P.c1d * d1; }

// Positions of a target site at its image nearest each end's centre (``centre_s``, ``centre_t``: a coordinate per
// axis, depth first in 3D), for the moments (act only): pos[0..dims) for s, pos[dims..2 dims) for t.
void site_positions(const Lattice& L, int site, const float* centre_s, const float* centre_t, float* pos) {
    const float* centres[2] = {centre_s, centre_t};
    const int z = site / (L.H * L.W), rest = site - z * L.H * L.W;
    const float coordinate[3] = {(float)z, (float)(rest / L.W), (float)(rest % L.W)};
    const float period[3] = {(float)L.D, (float)L.H, (float)L.W};
    const int first = 3 - L.dims;
    for (int e = 0; e < 2; ++e)
        for (int x = 0; x < L.dims; ++x)
            pos[e * L.dims + x] = centres[e][x] + wrap_offset(coordinate[first + x] - centres[e][x], period[first + x]);
}

// A lattice's tape: the records of the call's MCS in the order they were decided.
struct TapeView {
    int32_t* count;
    int32_t* cells;
    uint8_t* counts;
    float* noise;
    uint8_t* decision;
    float* extra;
    int K, width;  // width: floats per act record (extra_width)

    TapeView(const Args& a, int b) : count(nullptr), cells(nullptr), counts(nullptr), noise(nullptr),
                                     decision(nullptr), extra(nullptr), K(a.K), width(extra_width(dims_of(a))) {
        if (!a.tape_count) return;
        const int64_t base = (int64_t)b * a.mcs * a.D * a.H * a.W;
        count = a.tape_count + b;
        cells = a.tape_cells + base * 2;
        counts = a.tape_counts + base * (a.K + 2);
        noise = a.tape_noise + base;
        decision = a.tape_decision + base;
        extra = a.act ? a.tape_extra + base * width : nullptr;
    }
    bool on() const { return count != nullptr; }
    // Appends a record; returns its index.
    int push(int64_t s, int64_t t, const uint8_t* cq, float u, bool z) {
        const int r = (*count)++;
        cells[2 * r] = (int32_t)s;
        cells[2 * r + 1] = (int32_t)t;
        std::memcpy(counts + (int64_t)r * (K + 2), cq, K + 2);
        noise[r] = u;
        decision[r] = z ? ACCEPTED : REFUSED;
        return r;
    }
};

// The volume and surface changes of an accepted copy of s into t.
inline void move_volume(Lattice& L, int64_t s, int64_t t, float ds, float dt) {
    L.V[s] += 1.0f;
    L.V[t] -= 1.0f;
    if (L.has_surface) { L.S[s] += ds; L.S[t] += dt; }
}

// ---- the field's schedule ----------------------------------------------------------------------------

// xoshiro256** seeded through splitmix64: one stream per (MCS seed, lattice).
struct Random {
    uint64_t s[4];
    static uint64_t splitmix(uint64_t& x) {
        uint64_t z = (x += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    Random(int64_t seed, int lattice) {
        uint64_t x = (uint64_t)seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(lattice + 1));
        for (auto& word : s) word = splitmix(x);
    }
    static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
    uint64_t next() {
        const uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
        s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t; s[3] = rotl(s[3], 45);
        return out;
    }
    double uniform() { return (double)(next() >> 11) * 0x1.0p-53; }  // [0, 1)
    int below(int n, double u) const { return std::min((int)(u * n), n - 1); }
};

// The sites with a Moore neighbour of another id. `flag` marks them and is kept up to date by every accepted copy (of
// the call); `sites` (with `where`, index in sites or -1) is the set in site order, collected from the flags at the
// start of an MCS and kept with O(1) insert, remove and uniform draw through the MCS when it draws from the set.
struct Border {
    std::vector<uint8_t> flag;
    std::vector<int32_t> sites, where;

    bool is_border(const Lattice& L, int site) const {
        const int64_t id = L.labels[site];
        int near[MAX_NEAR];
        L.around(site, near);
        for (int o = 0; o < L.nnb; ++o)
            if (L.labels[near[o]] != id) return true;
        return false;
    }
    // Calls visit(site) for every border site, in site order; returns how many there are. Branch-free over rows.
    template <typename F>
    static int scan(const Lattice& L, F&& visit) {
        int count = 0;
        if (L.dims == 3) {  // the nine rows around each row, then the 27 sites around each site of it
            const int plane = L.H * L.W;
            for (int z = 0; z < L.D; ++z)
                for (int i = 0; i < L.H; ++i) {
                    const int32_t* rows[9];
                    for (int a = 0; a < 3; ++a)
                        for (int c = 0; c < 3; ++c)
                            rows[3 * a + c] = L.labels + wrap_index(z + a - 1, L.D) * plane +
                                              wrap_index(i + c - 1, L.H) * L.W;
                    for (int j = 0; j < L.W; ++j) {
                        const int l = wrap_index(j - 1, L.W), r = wrap_index(j + 1, L.W);
                        const int32_t id = rows[4][j];
                        bool edge = false;
                        for (int q = 0; q < 9; ++q)
                            edge |= (rows[q][l] != id) | (rows[q][j] != id) | (rows[q][r] != id);
                        count += edge;
                        if (edge) visit(z * plane + i * L.W + j);
                    }
                }
            return count;
        }
        for (int i = 0; i < L.H; ++i) {
            const int32_t *up = L.labels + wrap_index(i - 1, L.H) * L.W, *row = L.labels + i * L.W,
                          *down = L.labels + wrap_index(i + 1, L.H) * L.W;
            for (int j = 0; j < L.W; ++j) {
                const int l = wrap_index(j - 1, L.W), r = wrap_index(j + 1, L.W);
                const int32_t id = row[j];
                const bool edge = (up[l] != id) | (up[j] != id) | (up[r] != id) | (row[l] != id) | (row[r] != id) |
                                  (down[l] != id) | (down[j] != id) | (down[r] != id);
                count += edge;
                if (edge) visit(i * L.W + j);
            }
        }
        return count;
    }
    void mark(const Lattice& L) {
        flag.assign((size_t)L.n, 0);
        scan(L, [this](int site) { flag[site] = 1; });
    }
    // The set in site order from the flags; returns its size.
    int collect(const Lattice& L) {
        where.assign((size_t)L.n, -1);
        sites.clear();
        for (int site = 0; site < L.n; ++site)
            if (flag[site]) {
                where[site] = (int32_t)sites.size();
                sites.push_back(site);
            }
        return (int)sites.size();
    }
    void refresh(const Lattice& L, int site, bool in_set) { set(site, is_border(L, site), in_set); }
    void set(int site, bool now, bool in_set) {
        if (now == (bool)flag[site]) return;
        flag[site] = now;
        if (!in_set) return;
        if (now) {
            where[site] = (int32_t)sites.size();
            sites.push_back(site);
        } else {
            const int32_t at = where[site], last = sites.back();
            sites[at] = last;
            where[last] = at;
            sites.pop_back();
            where[site] = -1;
        }
    }
    // After a copy into `site`: it and its neighbours may have joined or left (`in_set`: the set is being drawn from).
    void changed(const Lattice& L, int site, bool in_set) {
        if (L.dims == 3) return changed_3d(L, site, in_set);
        int near[MAX_NEAR];
        L.around(site, near);
        refresh(L, site, in_set);
        for (int o = 0; o < L.nnb; ++o) refresh(L, near[o], in_set);
    }
    // In 3D the 27 sites to refresh read the 5x5x5 box around the copied site: loaded once.
    void changed_3d(const Lattice& L, int site, bool in_set) {
        const int plane = L.H * L.W, z = site / plane, rest = site - z * plane, i = rest / L.W, j = rest - i * L.W;
        int zs[5], is[5], js[5];
        for (int k = 0; k < 5; ++k) {
            zs[k] = wrap_index(z + k - 2, L.D) * plane;
            is[k] = wrap_index(i + k - 2, L.H) * L.W;
            js[k] = wrap_index(j + k - 2, L.W);
        }
        int32_t box[5][5][5];
        for (int a = 0; a < 5; ++a)
            for (int c = 0; c < 5; ++c) {
                const int32_t* row = L.labels + zs[a] + is[c];
                for (int e = 0; e < 5; ++e) box[a][c][e] = row[js[e]];
            }
        for (int a = 1; a < 4; ++a)
            for (int c = 1; c < 4; ++c)
                for (int e = 1; e < 4; ++e) {
                    const int32_t id = box[a][c][e];
                    bool edge = false;
                    for (int da = -1; da <= 1; ++da)
                        for (int dc = -1; dc <= 1; ++dc)
                            for (int de = -1; de <= 1; ++de) edge |= box[a + da][c + dc][e + de] != id;
                    set(zs[a] + is[c] + js[e], edge, in_set);
                }
    }
};

// One copy attempt into `target` from its neighbour in direction d, decided on the current state; u draws the
// acceptance uniform when the attempt is decided (a different id, and the target not its cell's last site).
// Returns whether the lattice changed.
template <typename Draw>
bool attempt(Lattice& L, TapeView& tape, int target, int d, Draw&& u_draw, uint8_t* cq, bool need_both) {
    const int source = L.neighbour(target, d);
    const int64_t s = L.labels[source], t = L.labels[target];
    if (s == t) return false;
    if (t != 0 && !(L.V[t] > 1.5f)) return false;  // a cell keeps its last site
    int near[MAX_NEAR];
    L.around(target, near);
    gather(L, near, s, t, cq);
    const int ts = (int)L.types[s], tt = (int)L.types[t];
    double rest = contact_energy<double>(L.P, cq, L.K, ts, tt);
    double d0 = 0, d1 = 0;
    if (L.act) {
        d0 = geometric_activity<double>(L, source, L.P.m0) - geometric_activity<double>(L, target, L.P.m0);
        if (need_both || L.P.f != 0.0f)
            d1 = geometric_activity<double>(L, source, L.P.m1) - geometric_activity<double>(L, target, L.P.m1);
        rest = rest + act_energy(L.P, d0, d1);
    }
    const float ds = (float)(L.nbh - 2 * cq[L.K]), dt = (float)(2 * cq[L.K + 1] - L.nbh);
    const double p = acceptance<double>(full_energy<double>(rest, L.P, L.V, L.S, s, t, ts, tt, ds, dt,
                                                           L.has_surface), (double)L.P.T);
    const double u = u_draw();
    const bool z = u < p;
    float pos[6];
    const int dims = L.dims;
    const bool moves = L.act && (z || tape.on());
    if (moves) {  // each end's current centre: its moment over its volume before the copy
        float centres[6];
        const int64_t ends[2] = {s, t};
        for (int e = 0; e < 2; ++e) {
            const float v = std::max(L.V[ends[e]], 1.0f);
            for (int x = 0; x < dims; ++x) centres[e * dims + x] = L.moment[dims * ends[e] + x] / v;
        }
        site_positions(L, target, centres, centres + dims, pos);
    }
    if (tape.on()) {
        const int r = tape.push(s, t, cq, (float)u, z);
        if (tape.extra) {
            float* e = tape.extra + (int64_t)r * tape.width;
            e[0] = (float)d0; e[1] = (float)d1;
            std::memcpy(e + 2, pos, sizeof(float) * 2 * dims);
        }
    }
    if (!z) return false;
    move_volume(L, s, t, ds, dt);
    L.labels[target] = (int32_t)s;
    if (L.act) {
        L.age[target] = 0.0f;
        for (int x = 0; x < dims; ++x) {
            if (s > 0) L.moment[dims * s + x] += pos[x];
            if (t > 0) L.moment[dims * t + x] -= pos[dims + x];
        }
    }
    return true;
}

void end_of_mcs(Lattice& L) {
    if (L.act)
        for (int i = 0; i < L.n; ++i) L.age[i] += 1.0f;
}

void random_lattice(const Args& a, int b) {
    Lattice L(a, b);
    TapeView tape(a, b);
    const int n = L.n;
    std::vector<uint8_t> cq(L.K + 2);
    const bool need_both = tape.on();
    const bool uniform_targets = a.schedule == UNIFORM_TARGETS;
    Border border;
    if (!uniform_targets) border.mark(L);
    if (tape.on()) *tape.count = 0;
    for (int step = 0; step < a.mcs; ++step) {
        Random rng(a.seeds[step], b);
        // Where most sites are on the border, skipping the others saves less than upkeeping the set costs: this
        // MCS then draws its targets literally (the same process; the choice depends on the state alone). The set
        // is collected in site order every MCS, so that a step's draws do not depend on how steps were grouped in
        // calls.
        const bool literal = uniform_targets || border.collect(L) > DENSE * n;
        if (literal) {
            for (int k = 0; k < n; ++k) {
                const int target = rng.below(n, rng.uniform());
                const int d = rng.below(L.nnb, rng.uniform());
                const double u = rng.uniform();
                if (attempt(L, tape, target, d, [u] { return u; }, cq.data(), need_both) && !uniform_targets)
                    border.changed(L, target, false);
            }
        } else {
            // Attempts are numbered 0..n-1; those that miss the border set change nothing and are skipped.
            int64_t done = 0;
            int known = -1;
            double log_miss = 0.0;  // log(1 - |border| / n), recomputed when the border set changes size
            while (!border.sites.empty()) {
                const int size = (int)border.sites.size();
                if (size < n) {
                    if (size != known) { known = size; log_miss = std::log1p(-(double)size / n); }
                    const double skip = std::floor(std::log(1.0 - rng.uniform()) / log_miss);  // u in (0, 1]
                    if (skip >= (double)(n - done)) break;
                    done += (int64_t)skip;
                }
                done++;
                const int target = border.sites[rng.below(size, rng.uniform())];
                const int d = rng.below(L.nnb, rng.uniform());
                if (attempt(L, tape, target, d, [&rng] { return rng.uniform(); }, cq.data(), need_both))
                    border.changed(L, target, true);
            }
        }
        end_of_mcs(L);
    }
    L.finish();
}

// ---- the sweep schedule ------------------------------------------------------------------------------

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

void sweep_lattice(const Args& a, int b) {
    Lattice L(a, b);
    TapeView tape(a, b);
    const int H = L.H, W = L.W, K = L.K, C = L.C, h = H / 2, w = W / 2, n = h * w, B = a.B;
    std::vector<Proposal> active, sorted;
    std::vector<int32_t> starts, record(n);
    active.reserve(n);
    std::vector<float> rest(n), accept_noise(n), act_diff(L.act ? 2 * n : 0), centre(L.act ? 2 * C : 0);
    std::vector<int64_t> src(n), tgt(n);
    std::vector<uint8_t> decision(n), counts((size_t)n * (K + 2));
    if (tape.on()) *tape.count = 0;
    for (int c = 0; c < 4; ++c) {
        const int ca = CLASSES[c][0], cb = CLASSES[c][1];
        const float* u0 = a.noise + ((int64_t)(c * 2 + 0) * B + b) * n;
        const float* u1 = a.noise + ((int64_t)(c * 2 + 1) * B + b) * n;
        std::fill(decision.begin(), decision.end(), UNDECIDED);
        active.clear();
        // Gather: every proposal's energy from the lattice as the class begins.
        for (int k = 0; k < n; ++k) {
            const int target = (ca + 2 * (k / w)) * W + cb + 2 * (k % w);
            const float uu = u0[k] * 8.0f;
            const int d = std::min((int)uu, 7);
            int near[8];
            L.around(target, near);
            const int source = near[d];
            const int64_t s = L.labels[source], t = L.labels[target];
            if (s == t) continue;
            uint8_t* cq = counts.data() + (int64_t)k * (K + 2);
            gather(L, near, s, t, cq);
            float d_h = contact_energy<float>(L.P, cq, K, (int)L.types[s], (int)L.types[t]);
            if (L.act) {
                const float d0 = geometric_activity<float>(L, source, L.P.m0) -
                                 geometric_activity<float>(L, target, L.P.m0);
                const float d1 = geometric_activity<float>(L, source, L.P.m1) -
                                 geometric_activity<float>(L, target, L.P.m1);
                d_h = d_h + act_energy(L.P, d0, d1);
                act_diff[2 * k] = d0;
                act_diff[2 * k + 1] = d1;
            }
            rest[k] = d_h;
            accept_noise[k] = uu - (float)d;
            src[k] = s;
            tgt[k] = t;
            active.push_back({u1[k], k});
        }
        // Decide: one at a time in decreasing priority, each on the volumes and surfaces its predecessors left.
        by_priority(active, sorted, starts);
        for (const Proposal& prop : active) {
            const int k = prop.site;
            const int64_t s = src[k], t = tgt[k];
            if (t != 0 && !(L.V[t] > 1.5f)) continue;  // a cell keeps its last site
            const uint8_t* cq = counts.data() + (int64_t)k * (K + 2);
            const int ts = (int)L.types[s], tt = (int)L.types[t];
            const float ds = (float)(L.nbh - 2 * cq[K]), dt = (float)(2 * cq[K + 1] - L.nbh);
            const float p = acceptance<float>(full_energy<float>(rest[k], L.P, L.V, L.S, s, t, ts, tt, ds, dt,
                                                                 L.has_surface), L.P.T);
            const bool z = p - accept_noise[k] > 0.0f;
            decision[k] = z ? ACCEPTED : REFUSED;
            if (tape.on()) {
                record[k] = tape.push(s, t, cq, accept_noise[k], z);
                if (tape.extra) {
                    tape.extra[(int64_t)record[k] * tape.width] = act_diff[2 * k];
                    tape.extra[(int64_t)record[k] * tape.width + 1] = act_diff[2 * k + 1];
                }
            }
            if (!z) continue;
            move_volume(L, s, t, ds, dt);
            L.labels[(ca + 2 * (k / w)) * W + cb + 2 * (k % w)] = (int32_t)s;
            if (L.act) L.age[(ca + 2 * (k / w)) * W + cb + 2 * (k % w)] = 0.0f;
        }
        if (!L.act) continue;
        // Update the moments: every decided copy moves its target site, taken at its image nearest each cell's
        // centre (the moment before the class over the volume after it, as ActPotts._copied).
        for (int id = 0; id < C; ++id) {
            const float v = std::max(L.V[id], 1.0f);
            centre[2 * id] = L.moment[2 * id] / v;
            centre[2 * id + 1] = L.moment[2 * id + 1] / v;
        }
        for (const Proposal& prop : active) {
            const int k = prop.site;
            if (decision[k] == UNDECIDED) continue;
            float pos[4];
            site_positions(L, (ca + 2 * (k / w)) * W + cb + 2 * (k % w), centre.data() + 2 * src[k],
                           centre.data() + 2 * tgt[k], pos);
            if (tape.extra) std::memcpy(tape.extra + (int64_t)record[k] * tape.width + 2, pos, sizeof pos);
            if (decision[k] != ACCEPTED) continue;
            if (src[k] > 0) { L.moment[2 * src[k]] += pos[0]; L.moment[2 * src[k] + 1] += pos[1]; }
            if (tgt[k] > 0) { L.moment[2 * tgt[k]] -= pos[2]; L.moment[2 * tgt[k] + 1] -= pos[3]; }
        }
    }
    end_of_mcs(L);
    L.finish();
}

// ---- reverse mode ------------------------------------------------------------------------------------

// The slope of the decision z in p that the estimator passes back (STE: 1; Gumbel-sigmoid: its soft sample's).
float decision_slope(int estimator, float p, float u, float tau) {
    if (estimator != GUMBEL) return 1.0f;
    const float eps = 1.1920929e-07f;
    if (p < eps || p > 1.0f - eps) return 0.0f;
    const float pc = std::min(std::max(p, eps), 1.0f - eps), uc = std::min(std::max(u, eps), 1.0f - eps);
    const float logit = (std::log(pc / (1.0f - pc)) - std::log(uc / (1.0f - uc))) / tau;
    const float soft = 1.0f / (1.0f + std::exp(-logit));
    return soft * (1.0f - soft) / tau / (pc * (1.0f - pc));
}

// Reverse mode through one lattice's MCS from its tape: the adjoints of the volumes and surfaces it ended
// with (and of the gradient path and moments, which the decisions only add to) back to those it started
// with and to the parameters, in the layout of `params`.
void backward_lattice(const Args& a, int b) {
    const Params P = [&] {
        Params p(a.params + (int64_t)b * (a.K * a.K + 4 * a.K + 1), a.K);
        if (a.act) p.set_act(a.act_params + 2 * b);
        return p;
    }();
    const TapeView tape(a, b);
    const int K = a.K, C = a.C;
    const bool has_surface = a.has_surface;
    const int64_t* types = a.types + (int64_t)b * C;
    std::vector<float> V(a.volume + (int64_t)b * C, a.volume + (int64_t)(b + 1) * C);
    std::vector<float> S(a.surface + (int64_t)b * C, a.surface + (int64_t)(b + 1) * C);
    float* gV = a.gi_volume + (int64_t)b * C;
    float* gS = a.gi_surface + (int64_t)b * C;
    for (int i = 0; i < C; ++i) {
        gV[i] = a.g_volume ? a.g_volume[(int64_t)b * C + i] : 0.0f;
        gS[i] = a.g_surface ? a.g_surface[(int64_t)b * C + i] : 0.0f;
    }
    const float* gpath = a.g_path ? a.g_path + (int64_t)b * K * K : nullptr;
    const int dims = dims_of(a);
    const float* gmom = a.g_moment ? a.g_moment + (int64_t)b * C * dims : nullptr;
    const float glogp = a.g_logp ? a.g_logp[b] : 0.0f;
    float* gJ = a.g_params + (int64_t)b * (K * K + 4 * K + 1);
    float *gvt = gJ + K * K, *glamv = gvt + K, *gst = glamv + K, *glams = gst + K, *gT = glams + K;
    const float tiny = 1.17549435e-38f;
    for (int r = *tape.count - 1; r >= 0; --r) {
        const int64_t s = tape.cells[2 * r], t = tape.cells[2 * r + 1];
        const bool z = tape.decision[r] == ACCEPTED;
        const uint8_t* cq = tape.counts + (int64_t)r * (K + 2);
        const int ts = (int)types[s], tt = (int)types[t], same_s = cq[K], same_t = cq[K + 1];
        const float ds = (float)(a.nbh - 2 * same_s), dt = (float)(2 * same_t - a.nbh);
        if (z) {
            V[s] -= 1.0f;
            V[t] += 1.0f;
            if (has_surface) { S[s] -= ds; S[t] -= dt; }
        }
        const float* extra = tape.extra ? tape.extra + (int64_t)r * tape.width : nullptr;
        float rest = contact_energy<float>(P, cq, K, ts, tt);
        if (extra) rest = rest + act_energy(P, extra[0], extra[1]);
        const float d_h = full_energy<float>(rest, P, V.data(), S.data(), s, t, ts, tt, ds, dt, has_surface);
        const float x = d_h / P.T, p = acceptance<float>(d_h, P.T);
        float g_p;
        if (a.estimator == SCORE) {
            const float one = z ? 1.0f : 0.0f;
            g_p = glogp * (one / std::max(p, tiny) - (1.0f - one) / std::max(1.0f - p, tiny));
        } else {
            float g_z = gV[s] - gV[t];
            if (has_surface) g_z += gS[s] * ds + gS[t] * dt;
            if (gpath)
                for (int q = 0; q < K; ++q)
                    g_z += gpath[ts * K + q] * ((float)cq[q] - (q == ts ? (float)same_s : 0.0f)) -
                           gpath[tt * K + q] * ((float)cq[q] - (q == tt ? (float)same_t : 0.0f));
            if (gmom && extra)
                for (int x = 0; x < dims; ++x) {
                    if (s > 0) g_z += gmom[dims * s + x] * extra[2 + x];
                    if (t > 0) g_z -= gmom[dims * t + x] * extra[2 + dims + x];
                }
            g_p = g_z * decision_slope(a.estimator, p, tape.noise[r], a.tau);
        }
        const float g_x = (x >= 0.0f && x <= MAX_EXPONENT) ? -p * g_p : 0.0f;
        const float g_h = g_x / P.T;
        *gT += -g_x * d_h / (P.T * P.T);
        const float off_s = V[s] - P.vt[ts], off_t = V[t] - P.vt[tt];
        glamv[ts] += g_h * (2.0f * off_s + 1.0f);
        gV[s] += 2.0f * g_h * P.lamv[ts];
        gvt[ts] -= 2.0f * g_h * P.lamv[ts];
        glamv[tt] += g_h * (1.0f - 2.0f * off_t);
        gV[t] -= 2.0f * g_h * P.lamv[tt];
        gvt[tt] += 2.0f * g_h * P.lamv[tt];
        if (has_surface) {
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
            a.g_act[2 * b] += g_h * (-(1.0f - P.f) / P.m0 * extra[0] - P.f / P.m1 * extra[1]);
            a.g_act[2 * b + 1] += g_h * (P.lam_act / P.m0 * extra[0] - P.lam_act / P.m1 * extra[1]);
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

int32_t slm_abi_version() { return ABI_VERSION; }

// Clusters of equal non-zero values, face-connected (4 neighbours in a plane, 6 in 3D) on the torus, per lattice
// (union-find with path halving); D = 1 is a plane.
void slm_count_clusters(int B, int D, int H, int W, int threads, const int64_t* values, int64_t* out) {
    over_lattices(B, threads, [&](int b) {
        const int64_t N = (int64_t)D * H * W, plane = (int64_t)H * W;
        const int64_t* v = values + (int64_t)b * N;
        std::vector<int32_t> parent(N);
        for (int i = 0; i < N; ++i) parent[i] = i;
        auto find = [&](int32_t x) {
            while (parent[x] != x) x = parent[x] = parent[parent[x]];
            return x;
        };
        for (int z = 0; z < D; ++z)
            for (int i = 0; i < H; ++i)
                for (int j = 0; j < W; ++j) {
                    const int x = (int)(z * plane + i * W + j);
                    if (v[x] == 0) continue;
                    const int neighbours[3] = {(int)(z * plane + i * W + (j + 1) % W),
                                               (int)(z * plane + ((i + 1) % H) * W + j),
                                               (int)(((z + 1) % D) * plane + i * W + j)};
                    for (int k = 0; k < (D > 1 ? 3 : 2); ++k) {
                        const int y = neighbours[k];
                        if (v[y] == v[x]) {
                            const int32_t rx = find(x), ry = find(y);
                            if (rx != ry) parent[std::max(rx, ry)] = std::min(rx, ry);
                        }
                    }
                }
        int64_t count = 0;
        for (int x = 0; x < N; ++x) count += v[x] != 0 && find(x) == x;
        out[b] = count;
    });
}

// `a.mcs` Monte Carlo steps of every lattice (one under SWEEP), in place.
void slm_potts_mcs(const Args* a) {
    over_lattices(a->B, a->threads, [a](int b) {
        if (a->schedule == SWEEP)
            sweep_lattice(*a, b);
        else
            random_lattice(*a, b);
    });
}

void slm_potts_backward(const Args* a) {
    over_lattices(a->B, a->threads, [a](int b) { backward_lattice(*a, b); });
}

// The uniforms of lattice `lattice`'s stream for an MCS seeded `seed`, in the order UNIFORM_TARGETS uses them.
void slm_uniforms(int64_t seed, int lattice, int64_t n, double* out) {
    Random rng(seed, lattice);
    for (int64_t i = 0; i < n; ++i) out[i] = rng.uniform();
}

}  // extern "C"
