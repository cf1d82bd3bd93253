/* The native lane: a plain-proxy call served without Python on the per-request path (docs/native-lane.md).
 *
 * One call = one read holding one complete, plainly valid request for an eligible endpoint (lane.py builds the
 * routing table; anything else is not taken and goes to the Python lane unchanged).  This file does, in C:
 *
 *   serve()      strict request-head parse -> route (a dict of public paths) -> header hygiene (hop-by-hop and
 *                forwarding headers dropped, Host / X-Forwarded-* / X-Mashery-Message-ID set) -> the upstream
 *                request bytes written on a pooled keep-alive connection (an ``Upstream``).
 *   Upstream     the asyncio protocol of one backend connection: the response is parsed by httptools (the same
 *                llhttp parser, so the same strictness, as the Python client), its hop-by-hop headers are
 *                removed, the head is validated with the Python lane's character classes and written to the
 *                client with the body (Content-Length passed through, anything else re-framed chunked).
 *   sweep()      the endpoint deadline for calls still waiting for a response head (504).
 *
 * Python is called once per call at its end (``client._native_done``: metrics and the access record) and for the
 * rare paths: a stale pooled connection broken before any response byte (``lane._retry``: the request goes once
 * more on a fresh connection, as the Python client does), warming a pool that was empty.
 * The Python lane stays the reference: tests/integration/test_native_lane_differential.py compares the bytes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <ctype.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>
#include <stdint.h>
#include <pthread.h>

/* ------------------------------------------------------------------------------------------ module state */

static PyObject *ResponseParser;   /* httptools.HttpResponseParser */
static PyObject *RetryHook;        /* lane._retry(upstream): open a fresh connection for a call (lane.py) */
static PyObject *StatusLines;      /* dict int -> bytes (uvicorn STATUS_LINE) */
static PyObject *S_native_handover, *S_timeout, *S_failure, *S__native;
static PyObject *S_write, *S_close, *S_is_closing, *S_pause_reading, *S_resume_reading, *S_feed_data,
    *S_get_status_code, *S_should_keep_alive, *S_get_http_version, *S_native_done,
    *S_get_write_buffer_size, *S_HTTP10, *S_GET, *S_HEAD;

#define MAX_NATIVE_HEAD 16384      /* a larger request head goes to the Python lane (its limits answer it) */
#define MAX_REQ_FIELDS 100
#define MAX_RESP_HEAD 65536        /* http11.MAX_HEAD_BYTES */
#define MAX_RESP_FIELDS 100        /* http11.MAX_HEADER_COUNT */
#define KEEPALIVE_TIMEOUT_S 30.0   /* http11.KEEPALIVE_TIMEOUT_S */
#define KEEPALIVE_MARGIN_S 1.0
#define CLIENT_HIGH_WATER 262144   /* client write buffer above this: pause reading the backend */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* xoshiro256** seeded from getrandom, re-seeded in a forked child (pthread_atfork): message ids (unique, not
 * secret) */
static unsigned long long rng_s[4];
static pid_t rng_pid;
static inline unsigned long long rotl(unsigned long long x, int k) { return (x << k) | (x >> (64 - k)); }
static void rng_seed(void) {
    if (getrandom(rng_s, sizeof rng_s, 0) != sizeof rng_s) {
        unsigned long long t = (unsigned long long)now_s() * 1000003ULL ^ (unsigned long long)getpid();
        for (int i = 0; i < 4; i++) { t ^= t << 13; t ^= t >> 7; t ^= t << 17; rng_s[i] = t | 1; }
    }
    rng_pid = getpid();
}
static void rng_after_fork(void) { rng_pid = 0; }  /* a forked worker re-seeds before its first id */
static unsigned long long rng_next(void) {
    if (!rng_pid) rng_seed();  /* no getpid() per id: glibc no longer caches it, it is a system call */
    unsigned long long *s = rng_s, result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t; s[3] = rotl(s[3], 45);
    return result;
}
/* 36 characters: a canonical version-4 UUID (RFC 9562 §5.4) */
static void message_id(char *out) {
    static const char hex[] = "0123456789abcdef";
    unsigned long long hi = rng_next(), lo = rng_next();
    unsigned char b[16];
    for (int i = 0; i < 8; i++) { b[i] = (unsigned char)(hi >> (56 - 8 * i)); b[8 + i] = (unsigned char)(lo >> (56 - 8 * i)); }
    b[6] = (b[6] & 0x0F) | 0x40;
    b[8] = (b[8] & 0x3F) | 0x80;
    int o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) out[o++] = '-';
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 15];
    }
}


/* ------------------------------------------------------------------------------ SHA-256, HMAC (SigV4) */

#ifdef HAVE_OPENSSL
/* libcrypto's SHA-256 (SHA-NI where the CPU has it: ~4x the portable code below); setup.py defines HAVE_OPENSSL
 * when the OpenSSL headers are installed */
#include <openssl/sha.h>
typedef SHA256_CTX Sha256;
static void sha256_init(Sha256 *c) { SHA256_Init(c); }
static void sha256_update(Sha256 *c, const void *data, size_t len) { SHA256_Update(c, data, len); }
static void sha256_final(Sha256 *c, unsigned char out[32]) { SHA256_Final(out, c); }
#else
typedef struct { uint32_t h[8]; uint64_t len; unsigned char buf[64]; size_t n; } Sha256;
static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
    0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
    0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
    0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};
#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
static void sha256_block(Sha256 *c, const unsigned char *p) {
    uint32_t w[64], a, b, d, e, f, g, h, cc, t1, t2;
    for (int i = 0; i < 16; i++) w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = c->h[0]; b = c->h[1]; cc = c->h[2]; d = c->h[3]; e = c->h[4]; f = c->h[5]; g = c->h[6]; h = c->h[7];
    for (int i = 0; i < 64; i++) {
        t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
        t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & cc) ^ (b & cc));
        h = g; g = f; f = e; e = d + t1; d = cc; cc = b; b = a; a = t1 + t2;
    }
    c->h[0] += a; c->h[1] += b; c->h[2] += cc; c->h[3] += d; c->h[4] += e; c->h[5] += f; c->h[6] += g; c->h[7] += h;
}
static void sha256_init(Sha256 *c) {
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c,
                                   0x1f83d9ab, 0x5be0cd19};
    memcpy(c->h, iv, sizeof iv); c->len = 0; c->n = 0;
}
static void sha256_update(Sha256 *c, const void *data, size_t len) {
    const unsigned char *p = data;
    c->len += len;
    if (c->n) {
        size_t take = 64 - c->n < len ? 64 - c->n : len;
        memcpy(c->buf + c->n, p, take); c->n += take; p += take; len -= take;
        if (c->n == 64) { sha256_block(c, c->buf); c->n = 0; }
    }
    while (len >= 64) { sha256_block(c, p); p += 64; len -= 64; }
    if (len) { memcpy(c->buf, p, len); c->n = len; }
}
static void sha256_final(Sha256 *c, unsigned char out[32]) {
    uint64_t bits = c->len * 8;
    c->buf[c->n++] = 0x80;
    if (c->n > 56) {
        memset(c->buf + c->n, 0, 64 - c->n);
        sha256_block(c, c->buf);
        c->n = 0;
    }
    memset(c->buf + c->n, 0, 56 - c->n);
    for (int i = 0; i < 8; i++) c->buf[56 + i] = (unsigned char)(bits >> (56 - 8 * i));
    sha256_block(c, c->buf);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = c->h[i] >> 24; out[4 * i + 1] = c->h[i] >> 16; out[4 * i + 2] = c->h[i] >> 8; out[4 * i + 3] = c->h[i];
    }
}
#endif

static void to_hex(const unsigned char *d, int n, char *out) {
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < n; i++) { out[2 * i] = hex[d[i] >> 4]; out[2 * i + 1] = hex[d[i] & 15]; }
}
/* HMAC-SHA256 with a 32-byte key (the SigV4 signing key) */
static void hmac_sha256(const unsigned char key[32], const char *msg, size_t len, unsigned char out[32]) {
    unsigned char ipad[64], opad[64], inner[32];
    for (int i = 0; i < 64; i++) { unsigned char k = i < 32 ? key[i] : 0; ipad[i] = k ^ 0x36; opad[i] = k ^ 0x5c; }
    Sha256 c;
    sha256_init(&c); sha256_update(&c, ipad, 64); sha256_update(&c, msg, len); sha256_final(&c, inner);
    sha256_init(&c); sha256_update(&c, opad, 64); sha256_update(&c, inner, 32); sha256_final(&c, out);
}

/* sha256_hex(data) -> str: the same digest as hashlib (tests) */
static PyObject *lane_sha256_hex(PyObject *mod, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    Sha256 c; unsigned char d[32]; char hex[64];
    sha256_init(&c); sha256_update(&c, view.buf, view.len); sha256_final(&c, d);
    PyBuffer_Release(&view);
    to_hex(d, 32, hex);
    return PyUnicode_FromStringAndSize(hex, 64);
}

/* ------------------------------------------------------------------------------------------ byte classes */

/* RFC 9110 tchar */
static unsigned char TCHAR[256];
/* a request value byte the lane accepts: VCHAR, SP, HTAB (obs-text and controls go to the Python lane) */
static unsigned char RVAL[256];
/* request-target bytes the lane accepts (RFC 3986 pchar, '/', '?'; no '#') */
static unsigned char TARGET[256];
/* Host: reg-name characters (protocol._HOST) */
static unsigned char REGNAME[256];
/* response header name bytes the Python lane refuses (protocol._HEAD_LINES name class) */
static unsigned char NAME_BAD[256];
/* response header value bytes the Python lane refuses (controls but HTAB, DEL) */
static unsigned char VALUE_BAD[256];

static void init_classes(void) {
    const char *t = "!#$%&'*+-.^_`|~";
    for (int c = 0; c < 256; c++) {
        TCHAR[c] = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c && strchr(t, c));
        RVAL[c] = (c >= 0x20 && c <= 0x7e) || c == '\t';
        TARGET[c] = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c && strchr("-._~!$&'()*+,;=:@/?%", c));
        REGNAME[c] = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                     (c && strchr("._~!$&'()*+,;=%-", c));
        NAME_BAD[c] = c <= 0x1f || c == 0x7f || (c && strchr("()<>@,;:[]={} \t\\\"", c));
        VALUE_BAD[c] = (c <= 0x08) || (c >= 0x0a && c <= 0x1f) || c == 0x7f;
    }
}

static inline unsigned char lower(unsigned char c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

static int ieq(const char *a, Py_ssize_t n, const char *lit) {
    Py_ssize_t m = (Py_ssize_t)strlen(lit);
    if (n != m) return 0;
    for (Py_ssize_t i = 0; i < n; i++) if (lower((unsigned char)a[i]) != (unsigned char)lit[i]) return 0;
    return 1;
}

/* protocol._HOST: (\[[0-9A-Fa-f:.]+\] | reg-name+) (:[0-9]{1,5})? */
static int host_ok(const char *h, Py_ssize_t n) {
    Py_ssize_t i = 0;
    if (n == 0) return 0;
    if (h[0] == '[') {
        i = 1;
        while (i < n && (isxdigit((unsigned char)h[i]) || h[i] == ':' || h[i] == '.')) i++;
        if (i == 1 || i >= n || h[i] != ']') return 0;
        i++;
    } else {
        while (i < n && REGNAME[(unsigned char)h[i]]) i++;
        if (i == 0) return 0;
    }
    if (i == n) return 1;
    if (h[i] != ':') return 0;
    Py_ssize_t d = n - i - 1;
    if (d < 1 || d > 5) return 0;
    for (Py_ssize_t j = i + 1; j < n; j++) if (!isdigit((unsigned char)h[j])) return 0;
    return 1;
}

/* ------------------------------------------------------------------------------------------- growable buf */

typedef struct { char *p; Py_ssize_t n, cap; char stack[4096]; } Buf;
static void buf_init(Buf *b) { b->p = b->stack; b->n = 0; b->cap = sizeof b->stack; }
static int buf_put(Buf *b, const void *s, Py_ssize_t n) {
    if (b->n + n > b->cap) {
        Py_ssize_t cap = b->cap * 2;
        while (cap < b->n + n) cap *= 2;
        char *p = PyMem_Malloc(cap);
        if (!p) { PyErr_NoMemory(); return -1; }
        memcpy(p, b->p, b->n);
        if (b->p != b->stack) PyMem_Free(b->p);
        b->p = p; b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    return 0;
}
static int buf_str(Buf *b, const char *s) { return buf_put(b, s, (Py_ssize_t)strlen(s)); }
static void buf_free(Buf *b) { if (b->p != b->stack) PyMem_Free(b->p); }

/* ------------------------------------------------------------------------------------------------- Pool */

typedef struct UpstreamObject UpstreamObject;

typedef struct {
    PyObject_HEAD
    PyObject *idle;        /* list of Upstream, most recently used last */
    PyObject *origin;      /* (host, port) */
    int connections;       /* open connections of this pool (idle or busy) */
} PoolObject;

static PyTypeObject PoolType;

/* ------------------------------------------------------------------------------------------- Upstream */

enum { U_CONNECTING, U_IDLE, U_AWAIT_HEAD, U_BODY, U_DONE, U_CLOSED, U_RETRY };
enum { F_NONE, F_LENGTH, F_CHUNKED, F_UNTIL_CLOSE };
enum { E_NONE, E_UNAVAILABLE, E_TIMEOUT, E_BROKEN, E_DISCONNECTED, E_INVALID, E_TERMINATED };
enum { R_BACKEND, R_FUNCTION };
#define READ_CAP (6 * 1024 * 1024 + 1)  /* transports/http.py READ_CAP: a longer answer is cut there */

struct UpstreamObject {
    PyObject_HEAD
    PoolObject *pool;
    PyObject *transport;
    PyObject *parser;
    int state;
    double idle_since, idle_limit;
    /* the call */
    PyObject *client;            /* the client protocol (lane glue in protocol.py) */
    PyObject *client_transport;
    PyObject *endpoint;          /* lane.py endpoint tuple */
    PyObject *request;           /* the client's raw request */
    PyObject *wire;              /* the backend request as written (re-sent once on a fresh connection) */
    PyObject *method;            /* "GET" | "HEAD" */
    PyObject *path;              /* raw path, str */
    PyObject *mid;               /* message id, str */
    PyObject *headers;           /* response fields so far: list of (lower-cased name, value) */
    PyObject *out;               /* bytes to write to the client at the end of this read */
    double t0, deadline, up_elapsed;
    int status, is_head, interim, framing_hint, framing, keep_alive, conn_close, conn_keepalive;
    int head_bytes, head_raw, resp_started, head_written, chunked_out, client_gone, read_paused, close_after;
    int error;                   /* E_*: why the call ended early */
    int retried;                 /* the call already moved to a fresh connection once */
    int role;                    /* R_BACKEND: the backend exchange; R_FUNCTION: the pre-processor's call */
    int function_error;          /* the function's answer carries X-Amz-Function-Error */
    double t_up;                 /* when the backend request was written (upstream_ms) */
    double f_elapsed;            /* the pre-processor's call (invocation duration), -1 when none */
    PyObject *body;              /* R_FUNCTION: the answer's body pieces */
    PyObject *first;             /* a call waiting for a new connection (U_RETRY): what to write first, or NULL
                                    for ``wire`` (the backend request) */
    Py_ssize_t body_size;
    UpstreamObject *prev, *next; /* calls in flight (sweep) */
};

static PyTypeObject UpstreamType;
static UpstreamObject inflight = {.prev = &inflight, .next = &inflight};

static void link_inflight(UpstreamObject *u) {
    u->next = &inflight; u->prev = inflight.prev; inflight.prev->next = u; inflight.prev = u;
}
static void unlink_inflight(UpstreamObject *u) {
    if (u->next) { u->prev->next = u->next; u->next->prev = u->prev; u->next = u->prev = NULL; }
}

static void call_method0(PyObject *obj, PyObject *name) {
    if (!obj || obj == Py_None) return;
    PyObject *r = PyObject_CallMethodNoArgs(obj, name);
    if (r) Py_DECREF(r); else PyErr_WriteUnraisable(obj);
}

static void client_write(UpstreamObject *u, PyObject *data) {
    if (u->client_gone || !u->client_transport) return;
    PyObject *r = PyObject_CallMethodOneArg(u->client_transport, S_write, data);
    if (r) Py_DECREF(r);
    else { PyErr_Clear(); u->client_gone = 1; }  /* closed under us: connection_lost follows (client_lost) */
}

/* A whole reply the gateway makes (502, 504, a terminate): for a HEAD request only its head, as the Python lane
 * writes it (``_Cycle._body`` sends no body bytes for HEAD). */
static void client_write_reply(UpstreamObject *u, PyObject *reply) {
    if (!u->is_head) { client_write(u, reply); return; }
    const char *p = PyBytes_AS_STRING(reply);
    Py_ssize_t n = PyBytes_GET_SIZE(reply);
    const char *end = NULL;
    for (Py_ssize_t i = 0; i + 4 <= n; i++) if (memcmp(p + i, "\r\n\r\n", 4) == 0) { end = p + i + 4; break; }
    PyObject *head = PyBytes_FromStringAndSize(p, end ? end - p : n);
    if (!head) { PyErr_WriteUnraisable((PyObject *)u); return; }
    client_write(u, head);
    Py_DECREF(head);
}

static void pool_remove(UpstreamObject *u) {
    PoolObject *p = u->pool;
    if (!p) return;
    Py_ssize_t n = PyList_GET_SIZE(p->idle);
    for (Py_ssize_t i = n - 1; i >= 0; i--) {
        if (PyList_GET_ITEM(p->idle, i) == (PyObject *)u) { PyList_SetSlice(p->idle, i, i + 1, NULL); break; }
    }
}

static void upstream_close(UpstreamObject *u) {
    if (u->state == U_CLOSED) return;
    u->state = U_CLOSED;
    pool_remove(u);
    call_method0(u->transport, S_close);
}

static void clear_call(UpstreamObject *u) {
    Py_CLEAR(u->client); Py_CLEAR(u->client_transport); Py_CLEAR(u->endpoint); Py_CLEAR(u->request);
    Py_CLEAR(u->wire); Py_CLEAR(u->body); Py_CLEAR(u->first);
    Py_CLEAR(u->method); Py_CLEAR(u->path); Py_CLEAR(u->mid); Py_CLEAR(u->headers); Py_CLEAR(u->out);
    Py_CLEAR(u->parser);
}

/* ------------------------------------------------------------------------------------------- Tally */

/* The endpoint tuple of native/lane.py ``build_routes`` */
enum { EP_EPR, EP_BASE, EP_HOST, EP_KEY_IN_HEADER, EP_KEY_NAMES, EP_POOL, EP_SERVICE, EP_ENDPOINT, EP_TIMEOUT,
       EP_502, EP_504, EP_FUNC, EP_RECORDER, EP_TALLY, EP_SIZE };

/* One endpoint's counts of the calls the lane answered and recorded itself (``record``), added into the Python
 * metric families by ``Recorder.fold`` (native/lane.py) at the lane's sweep and before every metrics read: the
 * same counters and histograms ``Recorder.done`` updates, without a Python call per request. */
#define TALLY_BUCKETS 32
#define TALLY_STATUSES 16
typedef struct {
    PyObject_HEAD
    long calls;                                   /* gateway_native_requests_total */
    int nstatus, status[TALLY_STATUSES];
    long status_n[TALLY_STATUSES];                /* gateway_requests_total by status */
    int nlat, nside;
    double lat[TALLY_BUCKETS], side[TALLY_BUCKETS];  /* bucket bounds, ending with +Inf */
    long req[TALLY_BUCKETS], up[TALLY_BUCKETS], fn[TALLY_BUCKETS];
    double req_sum, up_sum, fn_sum;
    long allows;                                  /* the pre-processor's plain allows (Processor.native_allow) */
    PyObject *ids;                                /* the access line's ids (Recorder._ids) */
    PyObject *recorder;                           /* listed in Dirty while it holds counts (borrowed) */
    int listed;
} TallyObject;

static PyTypeObject TallyType;
static int format_line(Buf *b, PyObject *ids, PyObject *method, PyObject *path, PyObject *mid, const char *before,
                       Py_ssize_t before_n, double up, const char *after, Py_ssize_t after_n, long status,
                       double elapsed);
static PyObject *Dirty;                           /* Recorders whose tally holds counts */
static PyObject *S_gateway, *S_access_log, *S_enabled, *S__buf, *S_flush, *S_native_next;
static double LogFlushInterval = 0.5, LogFlushAt;  /* logs.FLUSH_INTERVAL_S */
static Py_ssize_t LogBufferLimit = 65536;          /* logs.BUFFER_LIMIT */

static int bounds_from(PyObject *seq, double *out, int *n) {
    PyObject *t = PySequence_Tuple(seq);
    if (!t) return -1;
    Py_ssize_t k = PyTuple_GET_SIZE(t);
    if (k < 1 || k > TALLY_BUCKETS) { Py_DECREF(t); PyErr_SetString(PyExc_ValueError, "1..32 bucket bounds"); return -1; }
    for (Py_ssize_t i = 0; i < k; i++) out[i] = PyFloat_AsDouble(PyTuple_GET_ITEM(t, i));
    Py_DECREF(t);
    *n = (int)k;
    return PyErr_Occurred() ? -1 : 0;
}

static int Tally_init(TallyObject *t, PyObject *args, PyObject *kw) {
    PyObject *lat, *side, *ids, *recorder;
    if (!PyArg_ParseTuple(args, "OOSO", &lat, &side, &ids, &recorder)) return -1;
    if (bounds_from(lat, t->lat, &t->nlat) < 0 || bounds_from(side, t->side, &t->nside) < 0) return -1;
    Py_XSETREF(t->ids, Py_NewRef(ids));
    t->recorder = recorder;  /* the Recorder owns this tally */
    return 0;
}

static void Tally_dealloc(TallyObject *t) {
    Py_CLEAR(t->ids);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static inline int bucket(const double *bounds, int n, double x) {
    int i = 0;
    while (i < n - 1 && x > bounds[i]) i++;  /* bisect_left: the first bound >= x (the last is +Inf) */
    return i;
}

/* Count one call; 0, or -1 when its status has no free slot (the caller records it through Python). */
static int tally_add(TallyObject *t, int status, double elapsed, double up, double fn, int allow) {
    int k = 0;
    while (k < t->nstatus && t->status[k] != status) k++;
    if (k == t->nstatus) {
        if (k == TALLY_STATUSES) return -1;
        t->status[k] = status; t->status_n[k] = 0; t->nstatus++;
    }
    if (!t->listed) {
        if (PyList_Append(Dirty, t->recorder) < 0) { PyErr_Clear(); return -1; }
        t->listed = 1;
    }
    t->status_n[k]++;
    t->calls++;
    t->req[bucket(t->lat, t->nlat, elapsed)]++;
    t->req_sum += elapsed;
    if (up >= 0) { t->up[bucket(t->lat, t->nlat, up)]++; t->up_sum += up; }
    if (allow) { t->fn[bucket(t->side, t->nside, fn)]++; t->fn_sum += fn; t->allows++; }
    return 0;
}

static PyObject *counts_tuple(const long *c, int n) {
    PyObject *t = PyTuple_New(n);
    for (int i = 0; t && i < n; i++) {
        PyObject *v = PyLong_FromLong(c[i]);
        if (!v) { Py_CLEAR(t); break; }
        PyTuple_SET_ITEM(t, i, v);
    }
    return t;
}

/* take() -> (calls, ((status, n), ...), request counts, sum, upstream counts, sum, allows, function counts, sum)
 * and the tally starts again from zero. */
static PyObject *Tally_take(TallyObject *t, PyObject *unused) {
    PyObject *statuses = PyTuple_New(t->nstatus);
    for (int k = 0; statuses && k < t->nstatus; k++) {
        PyObject *pair = Py_BuildValue("(il)", t->status[k], t->status_n[k]);
        if (!pair) { Py_CLEAR(statuses); break; }
        PyTuple_SET_ITEM(statuses, k, pair);
    }
    PyObject *req = statuses ? counts_tuple(t->req, t->nlat) : NULL;
    PyObject *up = req ? counts_tuple(t->up, t->nlat) : NULL;
    PyObject *fn = up ? counts_tuple(t->fn, t->nside) : NULL;
    PyObject *r = fn ? Py_BuildValue("(lOOdOdlOd)", t->calls, statuses, req, t->req_sum, up, t->up_sum,
                                     t->allows, fn, t->fn_sum) : NULL;
    Py_XDECREF(statuses); Py_XDECREF(req); Py_XDECREF(up); Py_XDECREF(fn);
    if (!r) return NULL;
    t->calls = 0; t->nstatus = 0; t->allows = 0; t->listed = 0;
    t->req_sum = t->up_sum = t->fn_sum = 0;
    memset(t->req, 0, sizeof t->req); memset(t->up, 0, sizeof t->up); memset(t->fn, 0, sizeof t->fn);
    return r;
}

/* add(status, elapsed, upstream, function) -> bool: count one call as ``record`` does (upstream / function < 0:
 * none; a function duration counts a plain allow).  False when the status has no free slot. */
static PyObject *Tally_add(TallyObject *t, PyObject *args) {
    int status;
    double elapsed, up, fn;
    if (!PyArg_ParseTuple(args, "iddd", &status, &elapsed, &up, &fn)) return NULL;
    if (tally_add(t, status, elapsed, up, fn, fn >= 0) < 0) { PyErr_Clear(); Py_RETURN_FALSE; }
    Py_RETURN_TRUE;
}

static PyMethodDef Tally_methods[] = {
    {"take", (PyCFunction)Tally_take, METH_NOARGS, "The counts since the last take(), and start again."},
    {"add", (PyCFunction)Tally_add, METH_VARARGS, "Count one call (record's counting, for tests)."},
    {NULL},
};

static PyTypeObject TallyType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sidecar_gateway.native._lane.Tally",
    .tp_basicsize = sizeof(TallyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Tally_init,
    .tp_dealloc = (destructor)Tally_dealloc,
    .tp_methods = Tally_methods,
};

/* take_dirty() -> the Recorders whose tally holds counts (each listed once until its take()). */
static PyObject *lane_take_dirty(PyObject *mod, PyObject *unused) {
    PyObject *out = Dirty;
    PyObject *fresh = PyList_New(0);
    if (!fresh) return NULL;
    Dirty = fresh;
    return out;
}

/* The access line of a recorded call, appended to the gateway's AccessLog buffer (``AccessLog.write_line``). */
static int log_line(UpstreamObject *u, TallyObject *t, int status, double elapsed, double up) {
    PyObject *app = PyObject_GetAttr(u->client, S_gateway);
    PyObject *log = app ? PyObject_GetAttr(app, S_access_log) : NULL;
    Py_XDECREF(app);
    if (!log) return -1;
    PyObject *enabled = PyObject_GetAttr(log, S_enabled);
    int on = enabled ? PyObject_IsTrue(enabled) : -1;
    Py_XDECREF(enabled);
    PyObject *buf = on > 0 ? PyObject_GetAttr(log, S__buf) : NULL;
    int rc = on < 0 ? -1 : 0;
    if (buf && PyByteArray_Check(buf)) {
        static const char term[] = ",\"verdict_pre\":\"terminate\"";
        int terminated = u->error == E_TERMINATED;
        Buf b; buf_init(&b);
        rc = format_line(&b, t->ids, u->method, u->path, u->mid, "", 0, up, terminated ? term : "",
                         terminated ? (Py_ssize_t)(sizeof term - 1) : 0, status, elapsed);
        Py_ssize_t old = PyByteArray_GET_SIZE(buf);
        if (rc == 0 && (rc = PyByteArray_Resize(buf, old + b.n)) == 0) {
            memcpy(PyByteArray_AS_STRING(buf) + old, b.p, b.n);
            double now = now_s();
            if (old + b.n > LogBufferLimit || now >= LogFlushAt) {
                LogFlushAt = now + LogFlushInterval;
                call_method0(log, S_flush);
            }
        }
        buf_free(&b);
    } else if (on > 0) {
        rc = -1;
        if (buf) PyErr_SetString(PyExc_TypeError, "AccessLog._buf is not a bytearray");
    }
    Py_XDECREF(buf);
    Py_DECREF(log);
    return rc;
}

/* The metrics and the access line of a call that ended plainly (answered by the backend, or a terminate) are
 * kept here; 1 when done, 0 when the call is Python's to record (``Recorder.done``: failures and the rare). */
static int record(UpstreamObject *u, int status, double elapsed) {
    if (u->error != E_NONE && u->error != E_TERMINATED) return 0;
    PyObject *t = PyTuple_GET_ITEM(u->endpoint, EP_TALLY);
    if (Py_TYPE(t) != &TallyType) return 0;
    int allow = u->f_elapsed >= 0 && u->error != E_TERMINATED;
    if (tally_add((TallyObject *)t, status, elapsed, u->up_elapsed, u->f_elapsed, allow) < 0) return 0;
    if (log_line(u, (TallyObject *)t, status, elapsed, u->up_elapsed) < 0) PyErr_WriteUnraisable(u->client);
    return 1;
}

/* The call ended (complete, failed, timed out, or the client went away): tell the client protocol, then
 * give the connection back to the pool or close it. */
static void finish(UpstreamObject *u, int reusable) {
    unlink_inflight(u);
    PyObject *client = u->client;
    if (client) {
        double elapsed = now_s() - u->t0;
        int status = u->status;
        if (u->error == E_UNAVAILABLE) status = 502;
        else if (u->error == E_TIMEOUT) status = 504;
        else if (u->error == E_DISCONNECTED) status = 499;
        if (record(u, status, elapsed)) {  /* the protocol goes on as after any response */
            Py_INCREF(client);
            PyObject *r = PyObject_CallMethodNoArgs(client, S_native_next);
            if (r) Py_DECREF(r); else PyErr_WriteUnraisable(client);
            Py_DECREF(client);
            goto done;
        }
        PyObject *up = (u->up_elapsed >= 0) ? PyFloat_FromDouble(u->up_elapsed) : Py_NewRef(Py_None);
        PyObject *fe = (u->f_elapsed >= 0) ? PyFloat_FromDouble(u->f_elapsed) : Py_NewRef(Py_None);
        PyObject *args[] = {client, u->endpoint, u->method, u->path, u->mid, NULL, NULL, up, NULL, fe};
        args[5] = PyLong_FromLong(status);
        args[6] = PyFloat_FromDouble(elapsed);
        args[8] = PyLong_FromLong(u->error);
        Py_INCREF(client);
        if (args[5] && args[6] && args[7] && args[8] && fe) {
            PyObject *r = PyObject_VectorcallMethod(S_native_done, args, 10 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
            if (r) Py_DECREF(r); else PyErr_WriteUnraisable(client);
        } else {
            PyErr_WriteUnraisable(client);
        }
        Py_XDECREF(args[5]); Py_XDECREF(args[6]); Py_XDECREF(up); Py_XDECREF(args[8]); Py_XDECREF(fe);
        Py_DECREF(client);
    }
done:
    clear_call(u);
    if (reusable && u->state == U_DONE && u->transport) {
        PyObject *closing = PyObject_CallMethodNoArgs(u->transport, S_is_closing);
        int is_closing = closing ? PyObject_IsTrue(closing) : 1;
        Py_XDECREF(closing);
        if (!closing) PyErr_Clear();
        if (!is_closing && u->pool) {
            u->state = U_IDLE;
            u->idle_since = now_s();
            if (PyList_Append(u->pool->idle, (PyObject *)u) == 0) return;
            PyErr_Clear();
        }
    }
    upstream_close(u);
}

/* A failure before anything was written to the client: the endpoint's rendered 502/504 goes out. */
static void fail_before_head(UpstreamObject *u, int error) {
    u->error = error;
    if (!u->head_written && !u->client_gone && u->endpoint) {
        PyObject *reply = PyTuple_GET_ITEM(u->endpoint, error == E_TIMEOUT ? EP_504 : EP_502);
        u->head_written = 1;
        client_write_reply(u, reply);
    } else if (u->head_written && !u->client_gone && u->client_transport) {
        call_method0(u->client_transport, S_close);  /* the response started: the client sees it cut */
    }
    upstream_close(u);
    finish(u, 0);
}

/* A connection whose call has moved elsewhere (or ended): back to the pool when its exchange ended cleanly. */
static void release(UpstreamObject *u, int reusable) {
    clear_call(u);
    if (reusable && u->state == U_DONE && u->transport && u->pool) {
        u->state = U_IDLE;
        u->idle_since = now_s();
        if (PyList_Append(u->pool->idle, (PyObject *)u) == 0) return;
        PyErr_Clear();
    }
    upstream_close(u);
}

/* The most recently used idle connection of ``pool`` that is still worth a request (new reference), or NULL. */
static UpstreamObject *pool_take(PoolObject *pool, double now) {
    while (PyList_GET_SIZE(pool->idle)) {
        Py_ssize_t last = PyList_GET_SIZE(pool->idle) - 1;
        UpstreamObject *c = (UpstreamObject *)Py_NewRef(PyList_GET_ITEM(pool->idle, last));
        PyList_SetSlice(pool->idle, last, last + 1, NULL);
        if (c->state == U_IDLE && now - c->idle_since < c->idle_limit && c->transport) return c;
        upstream_close(c);
        Py_DECREF(c);
    }
    return NULL;
}

static void reset_exchange(UpstreamObject *u) {
    u->status = 0; u->interim = 0; u->framing_hint = F_UNTIL_CLOSE; u->framing = F_NONE; u->keep_alive = 0;
    u->conn_close = 0; u->conn_keepalive = 0; u->head_bytes = 0; u->head_raw = 0; u->resp_started = 0;
    u->head_written = 0; u->chunked_out = 0; u->client_gone = 0; u->read_paused = 0; u->error = E_NONE;
    u->function_error = 0; u->body_size = 0; u->up_elapsed = -1;
}

/* Write ``data`` as a new exchange on ``u`` (idle, or just taken from its pool). */
static int start_exchange(UpstreamObject *u, PyObject *data, int role) {
    PyObject *headers = PyList_New(0);  /* the parser is made when a read needs it (fast_response) */
    if (!headers) return -1;
    Py_CLEAR(u->parser);
    Py_XSETREF(u->headers, headers);
    Py_CLEAR(u->body);
    Py_CLEAR(u->out);
    reset_exchange(u);
    u->role = role;
    u->state = U_AWAIT_HEAD;
    link_inflight(u);
    PyObject *r = PyObject_CallMethodOneArg(u->transport, S_write, data);
    if (r) Py_DECREF(r); else PyErr_WriteUnraisable(u->transport);
    return 0;
}

/* The call moves from ``src`` (done with it) to ``dst``, which then starts its exchange; the client protocol's
 * handle on its call follows (``client_lost``, ``resume``, ``close_after``). */
static void move_call(UpstreamObject *dst, UpstreamObject *src) {
#define MOVE(field) Py_XSETREF(dst->field, src->field); src->field = NULL
    MOVE(client); MOVE(client_transport); MOVE(endpoint); MOVE(request); MOVE(wire); MOVE(method); MOVE(path);
    MOVE(mid);
#undef MOVE
    dst->t0 = src->t0; dst->is_head = src->is_head; dst->close_after = src->close_after;
    dst->f_elapsed = src->f_elapsed;
    unlink_inflight(src);
    if (dst->client && PyObject_SetAttr(dst->client, S__native, (PyObject *)dst) < 0)
        PyErr_WriteUnraisable(dst->client);
}

/* The pre-processor's call is decided in Python (anything but a plain allow, a failure, a timeout, or no pooled
 * backend connection): the client protocol replays the request through the Python lane with this result. */
static void handover_python(UpstreamObject *u, PyObject *result, int reusable) {
    unlink_inflight(u);
    PyObject *client = u->client ? Py_NewRef(u->client) : NULL;
    PyObject *request = u->request ? Py_NewRef(u->request) : NULL;
    PyObject *mid = u->mid ? Py_NewRef(u->mid) : NULL;
    int gone = u->client_gone;
    release(u, reusable);
    if (client && request && mid && result && !gone) {
        PyObject *args[] = {client, request, mid, result};
        PyObject *r = PyObject_VectorcallMethod(S_native_handover, args, 4 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        if (r) Py_DECREF(r); else PyErr_WriteUnraisable(client);
    } else if (!result) {
        PyErr_WriteUnraisable(client ? client : Py_None);
    }
    Py_XDECREF(client); Py_XDECREF(request); Py_XDECREF(mid);
}

static void function_failed(UpstreamObject *u, PyObject *kind, const char *detail) {
    upstream_close(u);
    PyObject *result = Py_BuildValue("(Os)", kind, detail);
    handover_python(u, result, 0);
    Py_XDECREF(result);
}

static PyObject *Upstream_give_up(UpstreamObject *u, PyObject *unused);
/* No idle connection in ``pool``: a call holder that waits for a new one (U_RETRY, no transport).  Once the
 * call is on it, ``request_connection`` asks lane.py to open the connection; ``handover`` then starts the exchange
 * there, as for a stale connection's retry (or ``give_up``: 502, or the function's failure).  NULL (no exception)
 * when the pool is at its limit: the Python lane serves the call. */
#define MAX_POOL_CONNECTIONS 1024  /* per pool and worker */
static UpstreamObject *await_connection(PoolObject *pool) {
    if (!RetryHook || pool->connections >= MAX_POOL_CONNECTIONS) return NULL;
    UpstreamObject *w = (UpstreamObject *)PyObject_CallOneArg((PyObject *)&UpstreamType, (PyObject *)pool);
    if (!w) { PyErr_WriteUnraisable((PyObject *)pool); return NULL; }
    w->state = U_RETRY;
    return w;
}

static void request_connection(UpstreamObject *w, int role) {
    w->role = role;
    w->retried = 1;  /* a fresh connection: no stale-connection retry */
    link_inflight(w);
    PyObject *r = PyObject_CallOneArg(RetryHook, (PyObject *)w);
    if (r) { Py_DECREF(r); return; }
    PyErr_WriteUnraisable(RetryHook);
    r = Upstream_give_up(w, NULL);
    Py_XDECREF(r);
}

/* The answer's body is ``{}`` within JSON whitespace (RFC 8259 §2), or, when ``empty_ok``, only whitespace: the
 * http stack reads an empty 200 as ``{}`` (§8.1); aws-lambda does not (§7.2). */
static int json_braces(const char *s, Py_ssize_t n, int empty_ok) {
    Py_ssize_t a = 0, b = n;
    while (a < b && (s[a] == ' ' || s[a] == '\t' || s[a] == '\r' || s[a] == '\n')) a++;
    while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t' || s[b - 1] == '\r' || s[b - 1] == '\n')) b--;
    return (empty_ok && a == b) || (b - a == 2 && s[a] == '{' && s[a + 1] == '}');
}

enum { EP_FUNC_POOL, EP_FUNC_TEMPLATE, EP_FUNC_MIDS, EP_FUNC_DEADLINE, EP_FUNC_PROCESSOR, EP_FUNC_NAMES,
       EP_FUNC_FILLED, EP_FUNC_PREFIX, EP_FUNC_LAMBDA, EP_FUNC_SIGNER, EP_FUNC_DECIDE, EP_FUNC_SIZE };
/* aws-lambda: the signer cell [valid until (epoch s), state, refresh hook] and its state tuple */
enum { SIGN_TEMPLATE, SIGN_MIDS, SIGN_DATE, SIGN_SIG, SIGN_BODY, SIGN_P1, SIGN_P2, SIGN_SCOPE, SIGN_KEY, SIGN_SIZE };

/* The pre-processor answered (http stack, §8.1): a plain allow (204, or 200 whose body is empty or ``{}``, no
 * X-Amz-Function-Error) goes on to the backend here; anything else is the Python lane's to decide. */
static void function_done(UpstreamObject *u) {
    double now = now_s();
    double f_elapsed = now - u->t0;
    PyObject *body;
    if (!u->body) body = PyBytes_FromStringAndSize("", 0);
    else {
        PyObject *empty = PyBytes_FromStringAndSize("", 0);
        body = empty ? _PyBytes_Join(empty, u->body) : NULL;
        Py_XDECREF(empty);
    }
    if (!body) { PyErr_WriteUnraisable((PyObject *)u); function_failed(u, S_failure, "native lane: out of memory"); return; }
    int reusable = u->state == U_DONE && u->keep_alive && u->body_size < READ_CAP;
    int lambda = PyObject_IsTrue(PyTuple_GET_ITEM(PyTuple_GET_ITEM(u->endpoint, EP_FUNC), EP_FUNC_LAMBDA));
    int allow = !u->function_error && ((!lambda && u->status == 204) ||
        (u->status == 200 && json_braces(PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body), !lambda)));
    if (allow && u->client && !u->client_gone) {
        PoolObject *bp = (PoolObject *)PyTuple_GET_ITEM(u->endpoint, EP_POOL);
        UpstreamObject *b = pool_take(bp, now);
        int waiting = 0;
        if (!b && (b = await_connection(bp))) waiting = 1;
        if (b) {
            u->f_elapsed = f_elapsed;
            move_call(b, u);
            b->retried = 0;
            double endpoint_deadline = b->t0 + PyFloat_AsDouble(PyTuple_GET_ITEM(b->endpoint, EP_TIMEOUT));
            b->deadline = endpoint_deadline > now + 0.001 ? endpoint_deadline : now + 0.001;
            release(u, reusable);
            if (waiting) {
                request_connection(b, R_BACKEND);
            } else if (start_exchange(b, b->wire, R_BACKEND) < 0) {
                PyErr_WriteUnraisable((PyObject *)b);
                b->state = U_AWAIT_HEAD;
                fail_before_head(b, E_UNAVAILABLE);
            } else {
                b->t_up = now_s();
            }
            Py_DECREF(b);
            Py_DECREF(body);
            return;
        }
    }
    PyObject *result = Py_BuildValue("(OiOOi)", Py_None, u->status, u->headers, body, u->function_error);
    Py_DECREF(body);
    if (result && !allow && u->client && !u->client_gone) {
        /* a terminate is decided and rendered by Python (gateway/native_hooks.py) and answered from here */
        PyObject *decide = PyTuple_GET_ITEM(PyTuple_GET_ITEM(u->endpoint, EP_FUNC), EP_FUNC_DECIDE);
        PyObject *fe = PyFloat_FromDouble(f_elapsed);
        PyObject *args[] = {result, fe};
        PyObject *answer = fe ? PyObject_Vectorcall(decide, args, 2, NULL) : NULL;
        Py_XDECREF(fe);
        if (!answer) PyErr_WriteUnraisable(decide);
        else if (PyTuple_Check(answer) && PyTuple_GET_SIZE(answer) == 2 && PyBytes_Check(PyTuple_GET_ITEM(answer, 1))) {
            u->status = (int)PyLong_AsLong(PyTuple_GET_ITEM(answer, 0));
            u->error = E_TERMINATED;
            u->head_written = 1;
            client_write_reply(u, PyTuple_GET_ITEM(answer, 1));
            Py_DECREF(answer);
            Py_DECREF(result);
            finish(u, reusable);
            return;
        }
        Py_XDECREF(answer);
    }
    handover_python(u, result, reusable);
    Py_XDECREF(result);
}

/* -- response head -> client head (app._respond / protocol._encode_head of the Python lane) -- */

static int token_in(const char *v, Py_ssize_t n, const char *tok) {
    /* case-insensitive substring, as the Python lane's ``b"close" in value.lower()`` */
    Py_ssize_t m = (Py_ssize_t)strlen(tok);
    for (Py_ssize_t i = 0; i + m <= n; i++) {
        Py_ssize_t j = 0;
        while (j < m && lower((unsigned char)v[i + j]) == (unsigned char)tok[j]) j++;
        if (j == m) return 1;
    }
    return 0;
}

static int is_hop(const char *n, Py_ssize_t len) {
    switch (len) {
    case 2: return memcmp(n, "te", 2) == 0;
    case 7: return memcmp(n, "trailer", 7) == 0 || memcmp(n, "upgrade", 7) == 0;
    case 10: return memcmp(n, "connection", 10) == 0 || memcmp(n, "keep-alive", 10) == 0;
    case 16: return memcmp(n, "proxy-connection", 16) == 0;
    case 17: return memcmp(n, "transfer-encoding", 17) == 0;
    case 18: return memcmp(n, "proxy-authenticate", 18) == 0;
    case 19: return memcmp(n, "proxy-authorization", 19) == 0;
    }
    return 0;
}

/* Names listed by Connection values (headers.strip_hop_by_hop): whether ``name`` is one of them. */
static int named_by_connection(PyObject *headers, const char *name, Py_ssize_t nlen) {
    Py_ssize_t count = PyList_GET_SIZE(headers);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(headers, i);
        PyObject *k = PyTuple_GET_ITEM(item, 0);
        if (PyBytes_GET_SIZE(k) != 10 || memcmp(PyBytes_AS_STRING(k), "connection", 10) != 0) continue;
        PyObject *v = PyTuple_GET_ITEM(item, 1);
        const char *s = PyBytes_AS_STRING(v);
        Py_ssize_t n = PyBytes_GET_SIZE(v);
        if (ieq(s, n, "keep-alive") || ieq(s, n, "close")) continue;
        Py_ssize_t a = 0;
        while (a <= n) {
            Py_ssize_t b = a;
            while (b < n && s[b] != ',') b++;
            Py_ssize_t x = a, y = b;
            while (x < y && (s[x] == ' ' || s[x] == '\t' || s[x] == '\n' || s[x] == '\r' || s[x] == '\v' || s[x] == '\f')) x++;
            while (y > x && (s[y - 1] == ' ' || s[y - 1] == '\t' || s[y - 1] == '\n' || s[y - 1] == '\r' || s[y - 1] == '\v' || s[y - 1] == '\f')) y--;
            if (y - x == nlen) {
                Py_ssize_t j = 0;
                while (j < nlen && lower((unsigned char)s[x + j]) == (unsigned char)name[j]) j++;
                if (j == nlen) return 1;
            }
            a = b + 1;
        }
    }
    return 0;
}

static PyObject *build_client_head(UpstreamObject *u) {
    PyObject *key = PyLong_FromLong(u->status);
    if (!key) return NULL;
    PyObject *line = PyDict_GetItemWithError(StatusLines, key);
    Py_DECREF(key);
    if (!line) { if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "status out of range"); return NULL; }
    Buf b; buf_init(&b);
    if (buf_put(&b, PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line)) < 0) return NULL;
    int has_length = 0, has_conn = 0;
    Py_ssize_t count = PyList_GET_SIZE(u->headers);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *k = PyTuple_GET_ITEM(PyList_GET_ITEM(u->headers, i), 0);
        if (PyBytes_GET_SIZE(k) == 10 && memcmp(PyBytes_AS_STRING(k), "connection", 10) == 0) has_conn = 1;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(u->headers, i);
        PyObject *k = PyTuple_GET_ITEM(item, 0), *v = PyTuple_GET_ITEM(item, 1);
        const char *name = PyBytes_AS_STRING(k), *val = PyBytes_AS_STRING(v);
        Py_ssize_t nl = PyBytes_GET_SIZE(k), vl = PyBytes_GET_SIZE(v);
        if (is_hop(name, nl)) continue;
        if (has_conn && named_by_connection(u->headers, name, nl)) continue;
        for (Py_ssize_t j = 0; j < nl; j++) if (NAME_BAD[(unsigned char)name[j]]) goto invalid;
        for (Py_ssize_t j = 0; j < vl; j++) if (VALUE_BAD[(unsigned char)val[j]]) goto invalid;
        if (nl == 14 && memcmp(name, "content-length", 14) == 0) has_length = 1;
        if (buf_put(&b, name, nl) < 0 || buf_put(&b, ": ", 2) < 0 || buf_put(&b, val, vl) < 0 ||
            buf_put(&b, "\r\n", 2) < 0) { buf_free(&b); return NULL; }
    }
    u->chunked_out = 0;
    if (!has_length && !u->is_head && u->status != 204 && u->status != 304) {
        u->chunked_out = 1;
        if (buf_str(&b, "transfer-encoding: chunked\r\n") < 0) { buf_free(&b); return NULL; }
    }
    if (u->close_after && buf_str(&b, "connection: close\r\n") < 0) { buf_free(&b); return NULL; }
    if (buf_put(&b, "\r\n", 2) < 0) { buf_free(&b); return NULL; }
    PyObject *r = PyBytes_FromStringAndSize(b.p, b.n);
    buf_free(&b);
    return r;
invalid:
    buf_free(&b);
    PyErr_SetString(PyExc_ValueError, "Invalid HTTP header.");
    return NULL;
}

/* -- httptools callbacks (the same rules as http11.Http11Connection's) -- */

static PyObject *parse_abort(void) {
    PyErr_SetString(PyExc_RuntimeError, "native lane: response rejected");
    return NULL;
}

/* One response field: appended to u->headers as (lower-cased name, value), and what it says of the framing and
 * the connection.  0, or -1 with an exception set. */
static int add_header(UpstreamObject *u, const char *s, Py_ssize_t nl, PyObject *value) {
    Py_ssize_t vl = PyBytes_GET_SIZE(value);
    PyObject *lname = PyBytes_FromStringAndSize(NULL, nl);
    if (!lname) return -1;
    char *d = PyBytes_AS_STRING(lname);
    for (Py_ssize_t i = 0; i < nl; i++) d[i] = (char)lower((unsigned char)s[i]);
    PyObject *item = PyTuple_Pack(2, lname, value);
    Py_DECREF(lname);
    if (!item) return -1;
    int rc = PyList_Append(u->headers, item);
    Py_DECREF(item);
    if (rc < 0) return -1;
    const char *v = PyBytes_AS_STRING(value);
    if (nl == 14 && memcmp(d, "content-length", 14) == 0) {
        u->framing_hint = F_LENGTH;
    } else if (nl == 17 && memcmp(d, "transfer-encoding", 17) == 0) {
        Py_ssize_t e = vl;
        while (e > 0 && isspace((unsigned char)v[e - 1])) e--;
        if (e >= 7 && ieq(v + e - 7, 7, "chunked")) u->framing_hint = F_CHUNKED;
    } else if (nl == 10 && memcmp(d, "connection", 10) == 0) {
        if (token_in(v, vl, "close")) u->conn_close = 1;
        else if (token_in(v, vl, "keep-alive")) u->conn_keepalive = 1;
    } else if (nl == 10 && memcmp(d, "keep-alive", 10) == 0) {
        /* http11._KEEPALIVE_TIMEOUT: (^|[\s,;])timeout\s*=\s*"?(\d{1,9}) */
        for (Py_ssize_t i = 0; i + 7 <= vl; i++) {
            if (i > 0 && !(isspace((unsigned char)v[i - 1]) || v[i - 1] == ',' || v[i - 1] == ';')) continue;
            if (!ieq(v + i, 7, "timeout")) continue;
            Py_ssize_t j = i + 7;
            while (j < vl && isspace((unsigned char)v[j])) j++;
            if (j >= vl || v[j] != '=') continue;
            j++;
            while (j < vl && isspace((unsigned char)v[j])) j++;
            if (j < vl && v[j] == '"') j++;
            long long n = 0;
            int digits = 0;
            while (j < vl && isdigit((unsigned char)v[j]) && digits < 9) { n = n * 10 + (v[j] - '0'); j++; digits++; }
            if (!digits) continue;
            double lim = (double)n - KEEPALIVE_MARGIN_S;
            if (lim > KEEPALIVE_TIMEOUT_S) lim = KEEPALIVE_TIMEOUT_S;
            if (lim < 0) lim = 0;
            u->idle_limit = lim;
            break;
        }
    }
    return 0;
}

static PyObject *Upstream_on_header(UpstreamObject *u, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) { PyErr_SetString(PyExc_TypeError, "on_header(name, value)"); return NULL; }
    if (u->state != U_AWAIT_HEAD) Py_RETURN_NONE;
    PyObject *name = args[0], *value = args[1];
    if (!PyBytes_Check(name) || !PyBytes_Check(value)) return parse_abort();
    Py_ssize_t nl = PyBytes_GET_SIZE(name), vl = PyBytes_GET_SIZE(value);
    u->head_bytes += (int)(nl + vl + 4);
    if (PyList_GET_SIZE(u->headers) >= MAX_RESP_FIELDS || u->head_bytes > MAX_RESP_HEAD) return parse_abort();
    return add_header(u, PyBytes_AS_STRING(name), nl, value) < 0 ? NULL : Py_NewRef(Py_None);
}

static int out_append(UpstreamObject *u, PyObject *data) {
    if (!u->out) { u->out = PyList_New(0); if (!u->out) return -1; }
    return PyList_Append(u->out, data);
}

static PyObject *head_complete(UpstreamObject *u, int status, int keep_alive);

static PyObject *Upstream_on_headers_complete(UpstreamObject *u, PyObject *unused) {
    if (u->state != U_AWAIT_HEAD) { u->keep_alive = 0; Py_RETURN_NONE; }
    PyObject *r = PyObject_CallMethodNoArgs(u->parser, S_get_status_code);
    if (!r) return NULL;
    int status = (int)PyLong_AsLong(r);
    Py_DECREF(r);
    if (status < 200) {
        if (status == 101) return parse_abort();
        u->interim = 1;  /* 1xx (RFC 9110 §15.2): skipped, the final response follows */
        if (PyList_SetSlice(u->headers, 0, PyList_GET_SIZE(u->headers), NULL) < 0) return NULL;
        u->framing_hint = F_UNTIL_CLOSE;
        u->conn_close = u->conn_keepalive = 0;
        Py_RETURN_NONE;
    }
    int keep_alive;
    if (u->conn_close) keep_alive = 0;
    else {
        keep_alive = u->conn_keepalive;
        if (!keep_alive) {
            r = PyObject_CallMethodNoArgs(u->parser, S_should_keep_alive);
            if (!r) return NULL;
            keep_alive = PyObject_IsTrue(r);
            Py_DECREF(r);
        }
        if (!keep_alive) {
            r = PyObject_CallMethodNoArgs(u->parser, S_get_http_version);
            if (!r) return NULL;
            keep_alive = PyUnicode_Compare(r, S_HTTP10) != 0;
            Py_DECREF(r);
        }
    }
    return head_complete(u, status, keep_alive);
}

/* A final response head (status >= 200) is complete: its framing, and for the backend the client's head. */
static PyObject *head_complete(UpstreamObject *u, int status, int keep_alive) {
    u->status = status;
    int framing;
    if ((u->is_head && u->role == R_BACKEND) || status == 204 || status == 304) framing = F_NONE;  /* the
        function's call is a POST whatever the client's method */
    else {
        framing = u->framing_hint;
        if (framing == F_UNTIL_CLOSE) keep_alive = 0;
    }
    u->framing = framing;
    u->keep_alive = keep_alive;
    u->state = framing == F_NONE ? U_DONE : U_BODY;
    if (u->role == R_FUNCTION) {
        Py_ssize_t count = PyList_GET_SIZE(u->headers);
        for (Py_ssize_t i = 0; i < count; i++) {
            PyObject *k = PyTuple_GET_ITEM(PyList_GET_ITEM(u->headers, i), 0);
            if (PyBytes_GET_SIZE(k) == 20 && memcmp(PyBytes_AS_STRING(k), "x-amz-function-error", 20) == 0)
                u->function_error = 1;
        }
        Py_RETURN_NONE;
    }
    u->up_elapsed = now_s() - u->t_up;
    if (u->client_gone) Py_RETURN_NONE;
    PyObject *head = build_client_head(u);
    if (!head) {
        PyErr_Clear();
        u->error = E_INVALID;  /* the Python lane's RuntimeError: the client connection is closed, no answer */
        return parse_abort();
    }
    u->head_written = 1;
    int rc = out_append(u, head);
    Py_DECREF(head);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Upstream_on_body(UpstreamObject *u, PyObject *body) {
    if (u->state != U_BODY) { u->keep_alive = 0; Py_RETURN_NONE; }
    if (u->role == R_FUNCTION) {
        if (!PyBytes_Check(body) || u->body_size >= READ_CAP) Py_RETURN_NONE;
        if (!u->body && !(u->body = PyList_New(0))) return NULL;
        Py_ssize_t n = PyBytes_GET_SIZE(body);
        PyObject *piece = (u->body_size + n > READ_CAP)
            ? PyBytes_FromStringAndSize(PyBytes_AS_STRING(body), READ_CAP - u->body_size) : Py_NewRef(body);
        if (!piece) return NULL;
        u->body_size += PyBytes_GET_SIZE(piece);
        int rc = PyList_Append(u->body, piece);
        Py_DECREF(piece);
        if (rc < 0) return NULL;
        Py_RETURN_NONE;
    }
    if (u->client_gone || !PyBytes_Check(body)) Py_RETURN_NONE;
    Py_ssize_t n = PyBytes_GET_SIZE(body);
    if (!n) Py_RETURN_NONE;
    if (!u->chunked_out) return out_append(u, body) < 0 ? NULL : Py_NewRef(Py_None);
    char size[24];
    int sl = snprintf(size, sizeof size, "%zx\r\n", n);
    PyObject *chunk = PyBytes_FromStringAndSize(NULL, sl + n + 2);
    if (!chunk) return NULL;
    char *d = PyBytes_AS_STRING(chunk);
    memcpy(d, size, sl);
    memcpy(d + sl, PyBytes_AS_STRING(body), n);
    memcpy(d + sl + n, "\r\n", 2);
    int rc = out_append(u, chunk);
    Py_DECREF(chunk);
    return rc < 0 ? NULL : Py_NewRef(Py_None);
}

static PyObject *CHUNKED_END;

static PyObject *Upstream_on_message_complete(UpstreamObject *u, PyObject *unused) {
    if (u->interim) { u->interim = 0; Py_RETURN_NONE; }
    if (u->state == U_BODY) {
        u->state = U_DONE;
        if (u->role == R_BACKEND && u->chunked_out && !u->client_gone && out_append(u, CHUNKED_END) < 0) return NULL;
    }
    Py_RETURN_NONE;
}

/* -- the whole response in one read, without httptools -- */

/* The common answer of a backend or a function on a keep-alive connection: a strict head (``HTTP/1.0`` or
 * ``HTTP/1.1``, a 3-digit final status, token names, visible-ASCII values without trailing blanks, at most one
 * Content-Length of digits and no Transfer-Encoding or Upgrade) and exactly the body it announces, all in this
 * one read.  Such a response is taken here, through the very callbacks httptools would call (``add_header``,
 * ``head_complete``, ``on_body``, ``on_message_complete``) and with the keep-alive rule llhttp applies to it.
 * Anything else — a partial or pipelined read, an interim or close-delimited answer, chunking, obs-text, an
 * empty or oddly spaced value — returns 0 before any change, and httptools (llhttp) parses it as it always did.
 * 1: taken; -1: the callbacks rejected it (exception set, as feed_data would have raised). */
static int fast_response(UpstreamObject *u, PyObject *data) {
    const char *s = PyBytes_AS_STRING(data);
    Py_ssize_t n = PyBytes_GET_SIZE(data);
    if (n < 17 || memcmp(s, "HTTP/1.", 7) != 0 || (s[7] != '0' && s[7] != '1') || s[8] != ' ' ||
        !isdigit((unsigned char)s[9]) || !isdigit((unsigned char)s[10]) || !isdigit((unsigned char)s[11]) ||
        s[12] != ' ')
        return 0;
    int status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
    if (status < 200) return 0;
    Py_ssize_t i = 13;
    while (i < n && RVAL[(unsigned char)s[i]]) i++;
    if (i + 1 >= n || s[i] != '\r' || s[i + 1] != '\n') return 0;
    i += 2;
    Py_ssize_t fields[MAX_RESP_FIELDS][4];  /* name offset, name length, value offset, value length */
    int count = 0, head_bytes = 0, conn = 0;
    long long length = -1;
    for (;;) {
        if (i + 1 >= n) return 0;
        if (s[i] == '\r' && s[i + 1] == '\n') { i += 2; break; }
        if (count >= MAX_RESP_FIELDS) return 0;
        Py_ssize_t n0 = i;
        while (i < n && TCHAR[(unsigned char)s[i]]) i++;
        if (i == n0 || i >= n || s[i] != ':') return 0;
        Py_ssize_t nl = i - n0;
        i++;
        while (i < n && (s[i] == ' ' || s[i] == '\t')) i++;
        Py_ssize_t v0 = i;
        while (i < n && RVAL[(unsigned char)s[i]]) i++;
        Py_ssize_t vl = i - v0;
        if (!vl || s[i - 1] == ' ' || s[i - 1] == '\t' || i + 1 >= n || s[i] != '\r' || s[i + 1] != '\n') return 0;
        i += 2;
        head_bytes += (int)(nl + vl + 4);
        if (head_bytes > MAX_RESP_HEAD) return 0;
        const char *name = s + n0, *v = s + v0;
        if (nl == 14 && ieq(name, 14, "content-length")) {
            if (length >= 0 || vl > 15) return 0;
            length = 0;
            for (Py_ssize_t j = 0; j < vl; j++) {
                if (!isdigit((unsigned char)v[j])) return 0;
                length = length * 10 + (v[j] - '0');
            }
        } else if ((nl == 17 && ieq(name, 17, "transfer-encoding")) || (nl == 7 && ieq(name, 7, "upgrade"))) {
            return 0;
        } else if (nl == 10 && ieq(name, 10, "connection")) {
            conn = 1;
        }
        fields[count][0] = n0; fields[count][1] = nl; fields[count][2] = v0; fields[count][3] = vl;
        count++;
    }
    Py_ssize_t body = n - i;
    int bodiless = (u->is_head && u->role == R_BACKEND) || status == 204 || status == 304;
    if (bodiless ? body != 0 : (length < 0 || body != length)) return 0;
    if (conn && s[7] == '0') return 0;  /* HTTP/1.0 with Connection: llhttp's own keep-alive reading decides */
    for (int k = 0; k < count; k++) {
        PyObject *value = PyBytes_FromStringAndSize(s + fields[k][2], fields[k][3]);
        int rc = value ? add_header(u, s + fields[k][0], fields[k][1], value) : -1;
        Py_XDECREF(value);
        if (rc < 0) return -1;
    }
    u->head_bytes = head_bytes;
    /* llhttp_should_keep_alive for such a head: HTTP/1.1 unless Connection: close; HTTP/1.0 never here */
    PyObject *r = head_complete(u, status, u->conn_close ? 0 : (u->conn_keepalive || s[7] == '1'));
    if (!r) return -1;
    Py_DECREF(r);
    if (body) {
        PyObject *piece = PyBytes_FromStringAndSize(s + i, body);
        r = piece ? Upstream_on_body(u, piece) : NULL;
        Py_XDECREF(piece);
        if (!r) return -1;
        Py_DECREF(r);
    }
    r = Upstream_on_message_complete(u, NULL);
    if (!r) return -1;
    Py_DECREF(r);
    return 1;
}

/* -- asyncio protocol -- */

static PyObject *Upstream_connection_made(UpstreamObject *u, PyObject *transport) {
    Py_XSETREF(u->transport, Py_NewRef(transport));
    u->state = U_IDLE;
    u->idle_since = now_s();
    if (u->pool) u->pool->connections++;  /* opened for a waiting call: in no pool until ``handover`` */
    Py_RETURN_NONE;
}

static void flush_out(UpstreamObject *u) {
    PyObject *out = u->out;
    if (!out || PyList_GET_SIZE(out) == 0) return;
    PyObject *data;
    if (PyList_GET_SIZE(out) == 1) data = Py_NewRef(PyList_GET_ITEM(out, 0));
    else {
        static PyObject *empty;
        if (!empty) empty = PyBytes_FromStringAndSize("", 0);
        data = empty ? _PyBytes_Join(empty, out) : NULL;
    }
    PyList_SetSlice(out, 0, PyList_GET_SIZE(out), NULL);
    if (!data) { PyErr_WriteUnraisable((PyObject *)u); return; }
    client_write(u, data);
    Py_DECREF(data);
}

static PyObject *Upstream_data_received(UpstreamObject *u, PyObject *data) {
    int state = u->state;
    if (state == U_IDLE) { upstream_close(u); Py_RETURN_NONE; }  /* unsolicited bytes (RFC 9112 §9.3.2) */
    if (state == U_DONE) { u->keep_alive = 0; Py_RETURN_NONE; }
    if (state != U_AWAIT_HEAD && state != U_BODY) Py_RETURN_NONE;
    int first = !u->resp_started;
    u->resp_started = 1;
    Py_INCREF(u);
    int fast = first && state == U_AWAIT_HEAD && PyBytes_Check(data) ? fast_response(u, data) : 0;
    PyObject *r;
    if (fast) r = fast > 0 ? Py_NewRef(Py_None) : NULL;
    else if (!u->parser && !(u->parser = PyObject_CallOneArg(ResponseParser, (PyObject *)u))) r = NULL;
    else r = PyObject_CallMethodOneArg(u->parser, S_feed_data, data);
    if (u->role == R_FUNCTION) {
        if (!r) {
            PyErr_Clear();
            function_failed(u, S_failure, "malformed answer from the function");
        } else {
            Py_DECREF(r);
            if (u->state == U_AWAIT_HEAD) {
                u->head_raw += (int)PyBytes_GET_SIZE(data);
                if (u->head_raw > MAX_RESP_HEAD) function_failed(u, S_failure, "answer head too large");
            } else if (u->state == U_DONE || u->body_size >= READ_CAP) {
                function_done(u);
            }
        }
        Py_DECREF(u);
        Py_RETURN_NONE;
    }
    if (!r) {
        PyErr_Clear();
        if (u->error == E_INVALID) {
            if (u->client_transport && !u->client_gone) call_method0(u->client_transport, S_close);
            upstream_close(u);
            finish(u, 0);
        } else if (!u->head_written) {
            fail_before_head(u, E_UNAVAILABLE);  /* malformed or oversized answer: 502 */
        } else {
            flush_out(u);
            fail_before_head(u, E_BROKEN);
        }
        Py_DECREF(u);
        Py_RETURN_NONE;
    }
    Py_DECREF(r);
    if (u->state == U_AWAIT_HEAD) {
        u->head_raw += (int)PyBytes_GET_SIZE(data);
        if (u->head_raw > MAX_RESP_HEAD) fail_before_head(u, E_UNAVAILABLE);
        Py_DECREF(u);
        Py_RETURN_NONE;
    }
    flush_out(u);
    if (u->state == U_DONE) {
        finish(u, u->keep_alive);
    } else if (u->state == U_BODY && !u->read_paused && !u->client_gone && u->client_transport) {
        PyObject *size = PyObject_CallMethodNoArgs(u->client_transport, S_get_write_buffer_size);
        if (size) {
            if (PyLong_AsLong(size) > CLIENT_HIGH_WATER) {
                u->read_paused = 1;
                call_method0(u->transport, S_pause_reading);
            }
            Py_DECREF(size);
        }
        PyErr_Clear();
    }
    Py_DECREF(u);
    Py_RETURN_NONE;
}

static PyObject *Upstream_eof_received(UpstreamObject *u, PyObject *unused) { Py_RETURN_NONE; }
static PyObject *Upstream_noop(UpstreamObject *u, PyObject *unused) { Py_RETURN_NONE; }

static PyObject *Upstream_connection_lost(UpstreamObject *u, PyObject *exc) {
    int state = u->state;
    Py_INCREF(u);
    if (u->pool && state != U_CONNECTING) u->pool->connections--;
    if (u->role == R_FUNCTION && (state == U_AWAIT_HEAD || state == U_BODY)) {
        if (state == U_BODY && u->framing == F_UNTIL_CLOSE && exc == Py_None) {
            u->state = U_DONE;
            u->keep_alive = 0;
            function_done(u);
        } else {
            function_failed(u, S_failure, "the function's connection closed before its answer");
        }
        u->state = U_CLOSED;
        Py_CLEAR(u->transport);
        Py_DECREF(u);
        Py_RETURN_NONE;
    }
    if (state == U_AWAIT_HEAD) {
        if (!u->resp_started && !u->client_gone && u->client && !u->retried && RetryHook) {
            /* a pooled connection broke before any response byte (the stale keep-alive race): the request goes
             * once more, same message id, on a fresh connection (fastpool.py's rule); the deadline still runs */
            u->state = U_RETRY;
            Py_CLEAR(u->parser);
            Py_CLEAR(u->transport);
            PyObject *r = PyObject_CallOneArg(RetryHook, (PyObject *)u);
            if (r) Py_DECREF(r); else { PyErr_WriteUnraisable(RetryHook); fail_before_head(u, E_UNAVAILABLE); }
            Py_DECREF(u);
            Py_RETURN_NONE;
        } else {
            fail_before_head(u, E_UNAVAILABLE);
        }
    } else if (state == U_BODY) {
        if (u->framing == F_UNTIL_CLOSE && exc == Py_None) {  /* RFC 9112 §6.3 rule 8 */
            u->state = U_DONE;
            if (u->chunked_out && !u->client_gone) out_append(u, CHUNKED_END);
            flush_out(u);
            finish(u, 0);
        } else {
            flush_out(u);
            fail_before_head(u, E_BROKEN);
        }
    } else if (state == U_IDLE) {
        pool_remove(u);
    }
    u->state = U_CLOSED;
    Py_CLEAR(u->transport);
    Py_DECREF(u);
    Py_RETURN_NONE;
}

/* -- called by the client protocol (protocol.py) -- */

static PyObject *Upstream_client_lost(UpstreamObject *u, PyObject *unused) {
    if (u->state == U_AWAIT_HEAD || u->state == U_BODY || u->state == U_DONE || u->state == U_RETRY) {
        u->client_gone = 1;
        u->error = E_DISCONNECTED;
        Py_INCREF(u);
        upstream_close(u);
        finish(u, 0);
        Py_DECREF(u);
    }
    Py_RETURN_NONE;
}

static PyObject *Upstream_resume(UpstreamObject *u, PyObject *unused) {
    if (u->read_paused) {
        u->read_paused = 0;
        if (u->state == U_BODY) call_method0(u->transport, S_resume_reading);
    }
    Py_RETURN_NONE;
}

static PyObject *Upstream_close_after(UpstreamObject *u, PyObject *unused) {
    if (!u->head_written) u->close_after = 1;
    return PyBool_FromLong(u->close_after);
}

/* handover(fresh): the retry's connection is up; the call moves to it and the request is written again.  False
 * when the call ended meanwhile (``fresh`` stays in the pool as a spare connection). */
static PyObject *Upstream_handover(UpstreamObject *u, PyObject *arg) {
    if (Py_TYPE(arg) != &UpstreamType) { PyErr_SetString(PyExc_TypeError, "handover(Upstream)"); return NULL; }
    UpstreamObject *f = (UpstreamObject *)arg;
    int usable = f->state == U_IDLE && f->transport;
    if (u->state != U_RETRY || !u->client) {  /* the call ended meanwhile: a spare connection for the pool */
        if (usable && f->pool && PyList_Append(f->pool->idle, (PyObject *)f) < 0) return NULL;
        Py_RETURN_FALSE;
    }
    if (!usable) {  /* it broke before the call could use it: the call fails as its connection would have */
        PyObject *r = Upstream_give_up(u, NULL);
        Py_XDECREF(r);
        Py_RETURN_TRUE;
    }
    clear_call(f);
    PyObject *first = u->first ? Py_NewRef(u->first) : NULL;
    int role = u->role;
    move_call(f, u);
    f->deadline = u->deadline;
    f->retried = 1;
    u->state = U_CLOSED;
    clear_call(u);
    int rc = start_exchange(f, first ? first : f->wire, role);
    Py_XDECREF(first);
    if (rc < 0) {
        PyErr_WriteUnraisable((PyObject *)f);
        f->state = U_AWAIT_HEAD;
        if (role == R_FUNCTION) function_failed(f, S_failure, "native lane: out of memory");
        else fail_before_head(f, E_UNAVAILABLE);
    } else if (role == R_BACKEND) {
        f->t_up = now_s();
    }
    Py_RETURN_TRUE;
}

/* give_up(): the retry's connection could not be opened: 502 (the Python lane's ConnectError). */
static PyObject *Upstream_give_up(UpstreamObject *u, PyObject *unused) {
    if (u->state == U_RETRY && u->client) {
        Py_INCREF(u);
        if (u->role == R_FUNCTION) function_failed(u, S_failure, "could not connect to the function");
        else fail_before_head(u, E_UNAVAILABLE);
        Py_DECREF(u);
    }
    Py_RETURN_NONE;
}

static PyObject *Upstream_expired(UpstreamObject *u, PyObject *unused) {
    return PyBool_FromLong(u->state == U_IDLE && now_s() - u->idle_since >= u->idle_limit);
}

static PyObject *Upstream_close(UpstreamObject *u, PyObject *unused) {
    upstream_close(u);
    Py_RETURN_NONE;
}

static int Upstream_init(UpstreamObject *u, PyObject *args, PyObject *kwds) {
    PyObject *pool;
    if (!PyArg_ParseTuple(args, "O!", &PoolType, &pool)) return -1;
    Py_XSETREF(u->pool, (PoolObject *)Py_NewRef(pool));
    u->state = U_CONNECTING;
    u->idle_limit = KEEPALIVE_TIMEOUT_S;
    u->up_elapsed = -1;
    return 0;
}

static int Upstream_traverse(UpstreamObject *u, visitproc visit, void *arg) {
    Py_VISIT(u->pool); Py_VISIT(u->transport); Py_VISIT(u->parser); Py_VISIT(u->client);
    Py_VISIT(u->client_transport); Py_VISIT(u->endpoint); Py_VISIT(u->request); Py_VISIT(u->headers);
    Py_VISIT(u->wire); Py_VISIT(u->body); Py_VISIT(u->first);
    Py_VISIT(u->out);
    return 0;
}

static int Upstream_clear(UpstreamObject *u) {
    unlink_inflight(u);
    clear_call(u);
    Py_CLEAR(u->pool);
    Py_CLEAR(u->transport);
    return 0;
}

static void Upstream_dealloc(UpstreamObject *u) {
    PyObject_GC_UnTrack(u);
    Upstream_clear(u);
    Py_TYPE(u)->tp_free((PyObject *)u);
}

static PyMethodDef Upstream_methods[] = {
    {"on_header", (PyCFunction)(void (*)(void))Upstream_on_header, METH_FASTCALL, NULL},
    {"on_headers_complete", (PyCFunction)Upstream_on_headers_complete, METH_NOARGS, NULL},
    {"on_body", (PyCFunction)Upstream_on_body, METH_O, NULL},
    {"on_message_complete", (PyCFunction)Upstream_on_message_complete, METH_NOARGS, NULL},
    {"connection_made", (PyCFunction)Upstream_connection_made, METH_O, NULL},
    {"data_received", (PyCFunction)Upstream_data_received, METH_O, NULL},
    {"eof_received", (PyCFunction)Upstream_eof_received, METH_NOARGS, NULL},
    {"connection_lost", (PyCFunction)Upstream_connection_lost, METH_O, NULL},
    {"pause_writing", (PyCFunction)Upstream_noop, METH_NOARGS, NULL},
    {"resume_writing", (PyCFunction)Upstream_noop, METH_NOARGS, NULL},
    {"client_lost", (PyCFunction)Upstream_client_lost, METH_NOARGS,
     "The client connection was lost: abandon the call (499), never reuse this connection."},
    {"resume", (PyCFunction)Upstream_resume, METH_NOARGS, "The client drained its write buffer: read again."},
    {"close_after", (PyCFunction)Upstream_close_after, METH_NOARGS,
     "Graceful shutdown: answer with Connection: close if the head is not written yet; True if so."},
    {"expired", (PyCFunction)Upstream_expired, METH_NOARGS, "Idle past its idle limit."},
    {"handover", (PyCFunction)Upstream_handover, METH_O,
     "Move a call waiting for a retry to this fresh connection; False when the call ended meanwhile."},
    {"give_up", (PyCFunction)Upstream_give_up, METH_NOARGS, "The retry's connection failed: answer 502."},
    {"close", (PyCFunction)Upstream_close, METH_NOARGS, NULL},
    {NULL}
};

static PyMemberDef Upstream_members[] = {
    {"pool", T_OBJECT, offsetof(UpstreamObject, pool), READONLY, NULL},
    {NULL}
};

static PyTypeObject UpstreamType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sidecar_gateway.native._lane.Upstream",
    .tp_basicsize = sizeof(UpstreamObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "One pooled backend connection of the native lane (an asyncio protocol).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Upstream_init,
    .tp_dealloc = (destructor)Upstream_dealloc,
    .tp_traverse = (traverseproc)Upstream_traverse,
    .tp_clear = (inquiry)Upstream_clear,
    .tp_methods = Upstream_methods,
    .tp_members = Upstream_members,
};

/* ------------------------------------------------------------------------------------------ Pool type */

static int Pool_init(PoolObject *p, PyObject *args, PyObject *kwds) {
    PyObject *origin;
    if (!PyArg_ParseTuple(args, "O", &origin)) return -1;
    Py_XSETREF(p->origin, Py_NewRef(origin));
    Py_XSETREF(p->idle, PyList_New(0));
    return p->idle ? 0 : -1;
}
static int Pool_traverse(PoolObject *p, visitproc visit, void *arg) { Py_VISIT(p->idle); Py_VISIT(p->origin); return 0; }
static int Pool_clear(PoolObject *p) { Py_CLEAR(p->idle); Py_CLEAR(p->origin); return 0; }
static void Pool_dealloc(PoolObject *p) { PyObject_GC_UnTrack(p); Pool_clear(p); Py_TYPE(p)->tp_free((PyObject *)p); }

static PyObject *Pool_close(PoolObject *p, PyObject *unused) {
    while (p->idle && PyList_GET_SIZE(p->idle)) {
        UpstreamObject *u = (UpstreamObject *)Py_NewRef(PyList_GET_ITEM(p->idle, PyList_GET_SIZE(p->idle) - 1));
        PyList_SetSlice(p->idle, PyList_GET_SIZE(p->idle) - 1, PyList_GET_SIZE(p->idle), NULL);
        upstream_close(u);
        Py_DECREF(u);
    }
    Py_RETURN_NONE;
}

static PyMethodDef Pool_methods[] = {
    {"close", (PyCFunction)Pool_close, METH_NOARGS, "Close the idle connections."},
    {NULL}
};

static PyMemberDef Pool_members[] = {
    {"idle", T_OBJECT, offsetof(PoolObject, idle), READONLY, NULL},
    {"origin", T_OBJECT, offsetof(PoolObject, origin), READONLY, NULL},
    {"connections", T_INT, offsetof(PoolObject, connections), READONLY, NULL},
    {NULL}
};

static PyTypeObject PoolType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sidecar_gateway.native._lane.Pool",
    .tp_basicsize = sizeof(PoolObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The native lane's keep-alive connections to one backend origin.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Pool_init,
    .tp_dealloc = (destructor)Pool_dealloc,
    .tp_traverse = (traverseproc)Pool_traverse,
    .tp_clear = (inquiry)Pool_clear,
    .tp_methods = Pool_methods,
    .tp_members = Pool_members,
};

/* ------------------------------------------------------------------------------------------- serve() */


static int key_name(PyObject *names, const char *s, Py_ssize_t n) {
    Py_ssize_t count = PyTuple_GET_SIZE(names);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *k = PyTuple_GET_ITEM(names, i);
        if (PyBytes_GET_SIZE(k) == n && memcmp(PyBytes_AS_STRING(k), s, n) == 0) return 1;
    }
    return 0;
}


static int patch_mids(PyObject *wire, PyObject *mids, const char *mid) {
    Py_ssize_t tl = PyBytes_GET_SIZE(wire);
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(mids); i++) {
        Py_ssize_t o = PyLong_AsSsize_t(PyTuple_GET_ITEM(mids, i));
        if (o < 0 || o + 36 > tl) { PyErr_SetString(PyExc_ValueError, "bad function template"); return -1; }
        memcpy(PyBytes_AS_STRING(wire) + o, mid, 36);
    }
    return 0;
}

/* The pre-processor's request for this call (new reference), Py_None when the lane cannot make it now (the
 * aws-lambda signer has no usable credentials cached: the Python lane serves the call), NULL on error. */
static PyObject *function_request(PyObject *func, const char *mid) {
    PyObject *signer = PyTuple_GET_ITEM(func, EP_FUNC_SIGNER);
    if (signer == Py_None) {
        PyObject *wire = PyBytes_FromStringAndSize(PyBytes_AS_STRING(PyTuple_GET_ITEM(func, EP_FUNC_TEMPLATE)),
                                                   PyBytes_GET_SIZE(PyTuple_GET_ITEM(func, EP_FUNC_TEMPLATE)));
        if (wire && patch_mids(wire, PyTuple_GET_ITEM(func, EP_FUNC_MIDS), mid) < 0) Py_CLEAR(wire);
        return wire;
    }
    /* SigV4 (transports/sigv4.py PreparedSigner.sign): the state holds everything but the date, the payload
     * hash and the signature; it is rebuilt by Python when credentials or the UTC day change. */
    time_t now = time(NULL);
    double valid_until = PyFloat_AsDouble(PyList_GET_ITEM(signer, 0));
    if ((double)now >= valid_until) {
        PyObject *r = PyObject_CallOneArg(PyList_GET_ITEM(signer, 2), signer);
        if (!r) return NULL;
        int ok = PyObject_IsTrue(r);
        Py_DECREF(r);
        if (!ok) Py_RETURN_NONE;
        valid_until = PyFloat_AsDouble(PyList_GET_ITEM(signer, 0));
        if ((double)now >= valid_until) Py_RETURN_NONE;
    }
    PyObject *st = PyList_GET_ITEM(signer, 1);
    if (!PyTuple_Check(st) || PyTuple_GET_SIZE(st) != SIGN_SIZE) Py_RETURN_NONE;
    PyObject *tpl = PyTuple_GET_ITEM(st, SIGN_TEMPLATE);
    PyObject *wire = PyBytes_FromStringAndSize(PyBytes_AS_STRING(tpl), PyBytes_GET_SIZE(tpl));
    if (!wire) return NULL;
    if (patch_mids(wire, PyTuple_GET_ITEM(st, SIGN_MIDS), mid) < 0) { Py_DECREF(wire); return NULL; }
    Py_ssize_t tl = PyBytes_GET_SIZE(wire);
    Py_ssize_t od = PyLong_AsSsize_t(PyTuple_GET_ITEM(st, SIGN_DATE));
    Py_ssize_t os = PyLong_AsSsize_t(PyTuple_GET_ITEM(st, SIGN_SIG));
    Py_ssize_t ob = PyLong_AsSsize_t(PyTuple_GET_ITEM(st, SIGN_BODY));
    PyObject *key = PyTuple_GET_ITEM(st, SIGN_KEY);
    if (od < 0 || od + 16 > tl || os < 0 || os + 64 > tl || ob < 0 || ob > tl || PyBytes_GET_SIZE(key) != 32) {
        Py_DECREF(wire);
        PyErr_SetString(PyExc_ValueError, "bad signer state");
        return NULL;
    }
    static time_t date_of = -1;  /* the X-Amz-Date of the current second, made once per second */
    static char date[64];        /* 16 used; room for what the compiler cannot prove about tm fields */
    if (now != date_of) {
        struct tm tmv;
        gmtime_r(&now, &tmv);
        snprintf(date, sizeof date, "%04d%02d%02dT%02d%02d%02dZ", tmv.tm_year + 1900, tmv.tm_mon + 1, tmv.tm_mday,
                 tmv.tm_hour, tmv.tm_min, tmv.tm_sec);
        date_of = now;
    }
    char *w = PyBytes_AS_STRING(wire);
    memcpy(w + od, date, 16);
    unsigned char digest[32];
    char payload_hex[64], creq_hex[64], sig_hex[64];
    Sha256 c;
    sha256_init(&c); sha256_update(&c, w + ob, (size_t)(tl - ob)); sha256_final(&c, digest);
    to_hex(digest, 32, payload_hex);
    PyObject *p1 = PyTuple_GET_ITEM(st, SIGN_P1), *p2 = PyTuple_GET_ITEM(st, SIGN_P2);
    sha256_init(&c);
    sha256_update(&c, PyBytes_AS_STRING(p1), PyBytes_GET_SIZE(p1));
    sha256_update(&c, date, 16);
    sha256_update(&c, PyBytes_AS_STRING(p2), PyBytes_GET_SIZE(p2));
    sha256_update(&c, payload_hex, 64);
    sha256_final(&c, digest);
    to_hex(digest, 32, creq_hex);
    PyObject *scope = PyTuple_GET_ITEM(st, SIGN_SCOPE);
    Buf sts; buf_init(&sts);
    if (buf_str(&sts, "AWS4-HMAC-SHA256\n") < 0 || buf_put(&sts, date, 16) < 0 ||
        buf_put(&sts, PyBytes_AS_STRING(scope), PyBytes_GET_SIZE(scope)) < 0 || buf_put(&sts, creq_hex, 64) < 0) {
        buf_free(&sts); Py_DECREF(wire); return NULL;
    }
    hmac_sha256((const unsigned char *)PyBytes_AS_STRING(key), sts.p, (size_t)sts.n, digest);
    buf_free(&sts);
    to_hex(digest, 32, sig_hex);
    memcpy(w + os, sig_hex, 64);
    return wire;
}

/* A connection taken for a call that is not made after all: back to its pool (a waiting holder is dropped). */
static void put_back(PoolObject *pool, UpstreamObject *u, int waiting) {
    if (!waiting && PyList_Append(pool->idle, (PyObject *)u) < 0) PyErr_Clear();
    Py_DECREF(u);
}

/* serve(client, client_transport, data, routes, peer, scheme) -> Upstream (taken: on a pooled connection, or
 * waiting for a new one) | None (not for this lane, or its pool at its limit: the Python lane serves it) */
static PyObject *lane_serve(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6) { PyErr_SetString(PyExc_TypeError, "serve() takes 6 arguments"); return NULL; }
    PyObject *client = args[0], *ctransport = args[1], *data = args[2], *routes = args[3], *peer = args[4],
             *scheme = args[5];
    if (!PyBytes_Check(data) || !PyDict_Check(routes) || !PyBytes_Check(peer) || !PyBytes_Check(scheme))
        Py_RETURN_NONE;
    double t0 = now_s();
    const char *s = PyBytes_AS_STRING(data), *p, *end;
    Py_ssize_t n = PyBytes_GET_SIZE(data);
    if (n < 18 || n > MAX_NATIVE_HEAD || memcmp(s + n - 4, "\r\n\r\n", 4) != 0) Py_RETURN_NONE;
    end = s + n;
    int is_head;
    if (memcmp(s, "GET ", 4) == 0) { is_head = 0; p = s + 4; }
    else if (memcmp(s, "HEAD ", 5) == 0) { is_head = 1; p = s + 5; }
    else Py_RETURN_NONE;
    const char *target = p;
    while (p < end && TARGET[(unsigned char)*p]) p++;
    Py_ssize_t tlen = p - target;
    if (tlen == 0 || tlen > 8192 || target[0] != '/' || end - p < 12 || memcmp(p, " HTTP/1.1\r\n", 11) != 0)
        Py_RETURN_NONE;
    p += 11;
    const char *q = memchr(target, '?', tlen);
    Py_ssize_t path_len = q ? q - target : tlen;
    const char *query = q ? q + 1 : NULL;
    Py_ssize_t query_len = q ? tlen - path_len - 1 : 0;
    for (Py_ssize_t i = 0; i < path_len; i++) if (target[i] == '.' || target[i] == '%') Py_RETURN_NONE;

    /* route: the longest public_path on a segment boundary (routing.Router.match) */
    Py_ssize_t plen = path_len;
    while (plen > 0 && target[plen - 1] == '/') plen--;
    if (plen == 0) plen = 1;  /* "/" */
    PyObject *endpoint = NULL;
    for (;;) {
        PyObject *key = PyBytes_FromStringAndSize(target, plen);
        if (!key) return NULL;
        PyObject *entry = PyDict_GetItemWithError(routes, key);
        Py_DECREF(key);
        if (!entry && PyErr_Occurred()) return NULL;
        if (entry) {
            if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != EP_SIZE) Py_RETURN_NONE;
            endpoint = entry;
            break;
        }
        if (plen == 1 && target[0] == '/') Py_RETURN_NONE;  /* 404: the Python lane renders it */
        Py_ssize_t j = plen - 1;
        while (j > 0 && target[j] != '/') j--;
        plen = j > 0 ? j : 1;
    }
    const char *remainder = (plen == 1) ? target : target + plen;
    Py_ssize_t remainder_len = (plen == 1) ? path_len : path_len - plen;
    int key_in_header = PyObject_IsTrue(PyTuple_GET_ITEM(endpoint, EP_KEY_IN_HEADER));
    PyObject *key_names = PyTuple_GET_ITEM(endpoint, EP_KEY_NAMES);
    if (!key_in_header && query_len) {  /* a key presented in the query: the Python lane authenticates it */
        const char *a = query, *qend = query + query_len;
        while (a <= qend) {
            const char *b = memchr(a, '&', qend - a);
            if (!b) b = qend;
            const char *eq = memchr(a, '=', b - a);
            if (key_name(key_names, a, (eq ? eq : b) - a)) Py_RETURN_NONE;
            a = b + 1;
        }
    }

    /* the pre-processor (http stack, static input): its call goes first */
    PyObject *func = PyTuple_GET_ITEM(endpoint, EP_FUNC);
    PyObject *func_names = NULL;
    if (func != Py_None) {
        if (!PyTuple_Check(func) || PyTuple_GET_SIZE(func) != EP_FUNC_SIZE) Py_RETURN_NONE;
        func_names = PyTuple_GET_ITEM(func, EP_FUNC_NAMES);
        int cached = PySet_Contains(PyTuple_GET_ITEM(func, EP_FUNC_FILLED), PyTuple_GET_ITEM(func, EP_FUNC_PREFIX));
        if (cached != 0) { if (cached < 0) return NULL; Py_RETURN_NONE; }  /* the output cache may answer */
    }

    /* headers: strict and plain only; hygiene as headers.forward_request_headers */
    Buf kept; buf_init(&kept);
    const char *host = NULL;
    Py_ssize_t host_len = 0;
    int host_count = 0, fields = 0;
    char lname[64];
    while (!(p[0] == '\r' && p[1] == '\n')) {
        const char *name = p;
        while (p < end && TCHAR[(unsigned char)*p]) p++;
        Py_ssize_t nl = p - name;
        if (nl == 0 || p >= end || *p != ':') goto not_taken;
        p++;
        while (p < end && (*p == ' ' || *p == '\t')) p++;
        const char *value = p;
        while (p < end && RVAL[(unsigned char)*p]) p++;
        Py_ssize_t vl = p - value;
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n' || vl == 0 || value[vl - 1] == ' ' || value[vl - 1] == '\t')
            goto not_taken;
        p += 2;
        if (++fields > MAX_REQ_FIELDS) goto not_taken;
        int long_name = nl > (Py_ssize_t)sizeof lname;
        if (!long_name) for (Py_ssize_t i = 0; i < nl; i++) lname[i] = (char)lower((unsigned char)name[i]);
        if (!long_name) {
            int drop = 0;
            switch (nl) {
            case 2: drop = memcmp(lname, "te", 2) == 0; break;
            case 4:
                if (memcmp(lname, "host", 4) == 0) { host = value; host_len = vl; host_count++; drop = 1; }
                break;
            case 6: if (memcmp(lname, "expect", 6) == 0) goto not_taken; break;
            case 7:
                if (memcmp(lname, "upgrade", 7) == 0) goto not_taken;
                drop = memcmp(lname, "trailer", 7) == 0;
                break;
            case 10:
                if (memcmp(lname, "connection", 10) == 0) {
                    if (!ieq(value, vl, "keep-alive")) goto not_taken;
                    drop = 1;
                } else drop = memcmp(lname, "keep-alive", 10) == 0;
                break;
            case 14: if (memcmp(lname, "content-length", 14) == 0) goto not_taken; break;
            case 15:
                drop = memcmp(lname, "x-forwarded-for", 15) == 0;
                break;
            case 16: drop = memcmp(lname, "proxy-connection", 16) == 0 || memcmp(lname, "x-forwarded-host", 16) == 0; break;
            case 17:
                if (memcmp(lname, "transfer-encoding", 17) == 0) goto not_taken;
                drop = memcmp(lname, "x-forwarded-proto", 17) == 0;
                break;
            case 18: drop = memcmp(lname, "proxy-authenticate", 18) == 0; break;
            case 19: drop = memcmp(lname, "proxy-authorization", 19) == 0; break;
            case 20: drop = memcmp(lname, "x-mashery-message-id", 20) == 0; break;
            }
            if (key_in_header && key_name(key_names, lname, nl)) goto not_taken;
            if (func_names && key_name(func_names, lname, nl)) goto not_taken;  /* a header the input would carry */
            if (drop) continue;
            if (buf_put(&kept, lname, nl) < 0) goto error;
        } else {
            for (Py_ssize_t i = 0; i < nl; i++) { char c = (char)lower((unsigned char)name[i]); if (buf_put(&kept, &c, 1) < 0) goto error; }
            if (key_in_header || func_names) goto not_taken;  /* long names: never compared, never taken */
        }
        if (buf_put(&kept, ": ", 2) < 0 || buf_put(&kept, value, vl) < 0 || buf_put(&kept, "\r\n", 2) < 0) goto error;
    }
    if (p + 2 != end || host_count != 1 || !host_ok(host, host_len)) goto not_taken;

    /* a pooled connection, most recently used first; expired ones are closed */
    PoolObject *pool = (PoolObject *)PyTuple_GET_ITEM(func_names ? func : endpoint, func_names ? EP_FUNC_POOL : EP_POOL);
    if (Py_TYPE(pool) != &PoolType) goto not_taken;
    UpstreamObject *u = pool_take(pool, t0);
    int waiting = 0;  /* no idle connection: the call waits for a new one (await_connection) */
    if (!u && (u = await_connection(pool))) waiting = 1;
    if (!u) goto not_taken;  /* the pool is at its limit: the Python lane serves the call */

    /* the backend request (proxy.backend_path + http11.encode_request_head) */
    Buf req; buf_init(&req);
    char mid[36];
    message_id(mid);
    PyObject *base = PyTuple_GET_ITEM(endpoint, EP_BASE), *bhost = PyTuple_GET_ITEM(endpoint, EP_HOST);
    Py_ssize_t base_len = PyBytes_GET_SIZE(base);
    int ok = buf_str(&req, is_head ? "HEAD " : "GET ") == 0;
    if (ok) {
        if (base_len + remainder_len == 0) ok = buf_put(&req, "/", 1) == 0;
        else {
            const char *first = base_len ? PyBytes_AS_STRING(base) : remainder;
            if (first[0] != '/') ok = buf_put(&req, "/", 1) == 0;
            ok = ok && buf_put(&req, PyBytes_AS_STRING(base), base_len) == 0 &&
                 buf_put(&req, remainder, remainder_len) == 0;
        }
    }
    if (ok && query_len) ok = buf_put(&req, "?", 1) == 0 && buf_put(&req, query, query_len) == 0;
    ok = ok && buf_str(&req, " HTTP/1.1\r\n") == 0 && buf_put(&req, kept.p, kept.n) == 0 &&
         buf_str(&req, "host: ") == 0 && buf_put(&req, PyBytes_AS_STRING(bhost), PyBytes_GET_SIZE(bhost)) == 0 &&
         buf_str(&req, "\r\nx-forwarded-for: ") == 0 && buf_put(&req, PyBytes_AS_STRING(peer), PyBytes_GET_SIZE(peer)) == 0 &&
         buf_str(&req, "\r\nx-forwarded-proto: ") == 0 &&
         buf_put(&req, PyBytes_AS_STRING(scheme), PyBytes_GET_SIZE(scheme)) == 0 &&
         buf_str(&req, "\r\nx-forwarded-host: ") == 0 && buf_put(&req, host, host_len) == 0 &&
         buf_str(&req, "\r\nx-mashery-message-id: ") == 0 && buf_put(&req, mid, 36) == 0 &&
         buf_str(&req, "\r\n\r\n") == 0;
    buf_free(&kept);
    if (!ok) { buf_free(&req); put_back(pool, u, waiting); return NULL; }
    PyObject *wire = PyBytes_FromStringAndSize(req.p, req.n);
    buf_free(&req);
    PyObject *first = NULL;  /* what is written now: the backend request, or the function call */
    if (wire && func_names) first = function_request(func, mid);
    else if (wire) first = Py_NewRef(wire);
    if (first == Py_None) {  /* no usable signing credentials cached: the Python lane serves (and fetches them) */
        Py_DECREF(first);
        Py_DECREF(wire);
        put_back(pool, u, waiting);
        Py_RETURN_NONE;
    }
    PyObject *mid_s = first ? PyUnicode_FromStringAndSize(mid, 36) : NULL;
    PyObject *path_s = mid_s ? PyUnicode_DecodeLatin1(target, path_len, NULL) : NULL;
    if (!path_s) {
        Py_XDECREF(wire); Py_XDECREF(first); Py_XDECREF(mid_s);
        put_back(pool, u, waiting);  /* the connection is still good: back to the pool */
        return NULL;
    }
    clear_call(u);
    u->mid = mid_s;
    u->path = path_s;
    u->method = Py_NewRef(is_head ? S_HEAD : S_GET);
    u->client = Py_NewRef(client);
    u->client_transport = Py_NewRef(ctransport);
    u->endpoint = Py_NewRef(endpoint);
    u->request = Py_NewRef(data);
    u->wire = wire;
    u->t0 = t0;
    u->t_up = t0;
    u->f_elapsed = -1;
    u->deadline = t0 + PyFloat_AsDouble(func_names ? PyTuple_GET_ITEM(func, EP_FUNC_DEADLINE)
                                                    : PyTuple_GET_ITEM(endpoint, EP_TIMEOUT));
    u->is_head = is_head;
    u->close_after = 0;
    u->retried = 0;
    if (waiting) {
        if (func_names) u->first = first; else Py_DECREF(first);  /* the backend's is ``wire`` */
        request_connection(u, func_names ? R_FUNCTION : R_BACKEND);
        return (PyObject *)u;
    }
    int rc = start_exchange(u, first, func_names ? R_FUNCTION : R_BACKEND);
    Py_DECREF(first);
    if (rc < 0) {
        PyObject *t, *v, *tb;
        PyErr_Fetch(&t, &v, &tb);
        clear_call(u);
        PyList_Append(pool->idle, (PyObject *)u);
        Py_DECREF(u);
        PyErr_Restore(t, v, tb);
        return NULL;
    }
    return (PyObject *)u;  /* the reference taken from the pool */

not_taken:
    buf_free(&kept);
    Py_RETURN_NONE;
error:
    buf_free(&kept);
    return NULL;
}


/* ``x`` rounded to thousandths, printed as orjson prints such a float: at least one decimal, no trailing zeros
 * (``12.5``, ``3.0``, ``0.125``).  Durations and timestamps are never negative (clamped to 0). */
static int put_thousandths(Buf *b, double x) {
    long long k = x > 0 ? (long long)(x * 1000 + 0.5) : 0;
    char tmp[32];
    int n = 0, m = 0;
    char rev[24];
    long long q = k / 1000;
    int r = (int)(k % 1000);
    do { rev[m++] = (char)('0' + q % 10); q /= 10; } while (q);
    while (m) tmp[n++] = rev[--m];
    tmp[n++] = '.';
    tmp[n++] = (char)('0' + r / 100); tmp[n++] = (char)('0' + r / 10 % 10); tmp[n++] = (char)('0' + r % 10);
    while (tmp[n - 1] == '0' && tmp[n - 2] != '.') n--;
    return buf_put(b, tmp, n);
}

/* ``v`` (>= 0) in decimal at ``d``: its length */
static int put_int(char *d, long v) {
    char rev[24];
    int m = 0, n = 0;
    if (v < 0) { d[n++] = '-'; v = -v; }
    do { rev[m++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (m) d[n++] = rev[--m];
    return n;
}

static int put_str(Buf *b, PyObject *o) {
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(o, &n);
    return s ? buf_put(b, s, n) : -1;
}

/* One access line into ``b`` (native/lane.py ``Recorder``): ``before`` / ``after`` are the rare members around
 * ``upstream_ms`` (an error name; disconnected / verdict_pre), ``up`` < 0: no upstream_ms.  0, or -1 (exception). */
static int format_line(Buf *b, PyObject *ids, PyObject *method, PyObject *path, PyObject *mid, const char *before,
                       Py_ssize_t before_n, double up, const char *after, Py_ssize_t after_n, long status,
                       double elapsed) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double now = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    char num[24];
    int ok = buf_str(b, "{\"method\":\"") == 0 && put_str(b, method) == 0 && buf_str(b, "\",\"path\":\"") == 0 &&
             put_str(b, path) == 0 && buf_str(b, "\",\"message_id\":\"") == 0 && put_str(b, mid) == 0 &&
             buf_put(b, "\"", 1) == 0 && buf_put(b, PyBytes_AS_STRING(ids), PyBytes_GET_SIZE(ids)) == 0 &&
             buf_put(b, before, before_n) == 0;
    if (ok && up >= 0) ok = buf_str(b, ",\"upstream_ms\":") == 0 && put_thousandths(b, up * 1000) == 0;
    ok = ok && buf_put(b, after, after_n) == 0 &&
         buf_str(b, ",\"status\":") == 0 && buf_put(b, num, put_int(num, status)) == 0 &&
         buf_str(b, ",\"duration_ms\":") == 0 && put_thousandths(b, elapsed * 1000) == 0 &&
         buf_str(b, ",\"ts\":") == 0 && put_thousandths(b, now) == 0 && buf_str(b, "}\n") == 0;
    return ok ? 0 : -1;
}

/* format_record(ids, method, path, message_id, before, upstream, after, status, elapsed) -> bytes: the access
 * line of a native call (``format_line``), ``upstream`` None or seconds. */
static PyObject *lane_format_record(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 9) { PyErr_SetString(PyExc_TypeError, "format_record() takes 9 arguments"); return NULL; }
    PyObject *ids = args[0], *before = args[4], *up = args[5], *after = args[6];
    if (!PyBytes_Check(ids) || !PyBytes_Check(before) || !PyBytes_Check(after)) {
        PyErr_SetString(PyExc_TypeError, "format_record(): ids, before and after are bytes");
        return NULL;
    }
    long status = PyLong_AsLong(args[7]);
    double elapsed = PyFloat_AsDouble(args[8]);
    double upstream = up == Py_None ? -1 : PyFloat_AsDouble(up);
    if (PyErr_Occurred()) return NULL;
    Buf b; buf_init(&b);
    int rc = format_line(&b, ids, args[1], args[2], args[3], PyBytes_AS_STRING(before), PyBytes_GET_SIZE(before),
                         upstream, PyBytes_AS_STRING(after), PyBytes_GET_SIZE(after), status, elapsed);
    PyObject *r = rc == 0 ? PyBytes_FromStringAndSize(b.p, b.n) : NULL;
    buf_free(&b);
    return r;
}

/* sweep(): calls still waiting for a response head (or a retry's connection) past their endpoint deadline are
 * answered 504.  The expired calls are collected first: answering one may end others (and unlink them). */
static PyObject *lane_sweep(PyObject *mod, PyObject *unused) {
    double now = now_s();
    PyObject *expired = NULL;
    for (UpstreamObject *u = inflight.next; u != &inflight; u = u->next) {
        if ((u->state == U_AWAIT_HEAD || u->state == U_RETRY || (u->role == R_FUNCTION && u->state == U_BODY))
            && now >= u->deadline) {
            if (!expired && !(expired = PyList_New(0))) return NULL;
            if (PyList_Append(expired, (PyObject *)u) < 0) { Py_DECREF(expired); return NULL; }
        }
    }
    if (!expired) Py_RETURN_NONE;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(expired); i++) {
        UpstreamObject *u = (UpstreamObject *)PyList_GET_ITEM(expired, i);
        if (!u->client) continue;
        if (u->role == R_FUNCTION && (u->state == U_AWAIT_HEAD || u->state == U_BODY || u->state == U_RETRY))
            function_failed(u, S_timeout, "");  /* the processor's deadline: the Python lane applies §5.3/failSafe */
        else if (u->role == R_BACKEND && (u->state == U_AWAIT_HEAD || u->state == U_RETRY))
            fail_before_head(u, E_TIMEOUT);
    }
    Py_DECREF(expired);
    Py_RETURN_NONE;
}

static PyObject *lane_message_id(PyObject *mod, PyObject *unused) {
    char mid[36];
    message_id(mid);
    return PyUnicode_FromStringAndSize(mid, 36);
}

static PyObject *lane_configure(PyObject *mod, PyObject *args) {
    PyObject *parser, *lines, *retry;
    double interval = LogFlushInterval;
    Py_ssize_t limit = LogBufferLimit;
    if (!PyArg_ParseTuple(args, "OO!O|dn", &parser, &PyDict_Type, &lines, &retry, &interval, &limit)) return NULL;
    LogFlushInterval = interval;
    LogBufferLimit = limit;
    Py_XSETREF(ResponseParser, Py_NewRef(parser));
    Py_XSETREF(RetryHook, Py_NewRef(retry));
    Py_XSETREF(StatusLines, Py_NewRef(lines));
    Py_RETURN_NONE;
}

static PyMethodDef lane_methods[] = {
    {"serve", (PyCFunction)(void (*)(void))lane_serve, METH_FASTCALL,
     "serve(client, client_transport, data, routes, peer, scheme) -> Upstream | None"},
    {"sweep", (PyCFunction)lane_sweep, METH_NOARGS, "Answer 504 for calls past their deadline."},
    {"format_record", (PyCFunction)(void (*)(void))lane_format_record, METH_FASTCALL,
     "format_record(ids, method, path, message_id, before, upstream, after, status, elapsed) -> bytes"},
    {"message_id", (PyCFunction)lane_message_id, METH_NOARGS, "A message id as serve() makes them."},
    {"sha256_hex", (PyCFunction)lane_sha256_hex, METH_O, "Hex SHA-256 (the signer's, for tests)."},
    {"configure", (PyCFunction)lane_configure, METH_VARARGS, "configure(HttpResponseParser, STATUS_LINE, retry[, log flush interval, log buffer limit])"},
    {"take_dirty", (PyCFunction)lane_take_dirty, METH_NOARGS, "The Recorders whose tally holds counts."},
    {NULL}
};

static struct PyModuleDef lane_module = {PyModuleDef_HEAD_INIT, "_lane", NULL, -1, lane_methods};

PyMODINIT_FUNC PyInit__lane(void) {
    init_classes();
    rng_seed();
    pthread_atfork(NULL, NULL, rng_after_fork);
    if (PyType_Ready(&PoolType) < 0 || PyType_Ready(&UpstreamType) < 0 || PyType_Ready(&TallyType) < 0) return NULL;
    if (!Dirty && !(Dirty = PyList_New(0))) return NULL;
#define STR(var, text) if (!(var = PyUnicode_InternFromString(text))) return NULL
    STR(S_write, "write"); STR(S_close, "close"); STR(S_is_closing, "is_closing");
    STR(S_pause_reading, "pause_reading"); STR(S_resume_reading, "resume_reading"); STR(S_feed_data, "feed_data");
    STR(S_get_status_code, "get_status_code"); STR(S_should_keep_alive, "should_keep_alive");
    STR(S_get_http_version, "get_http_version"); STR(S_native_done, "_native_done");
    STR(S_get_write_buffer_size, "get_write_buffer_size"); STR(S_native_handover, "_native_handover");
    STR(S_timeout, "timeout"); STR(S_failure, "failure"); STR(S__native, "_native");
    STR(S_HTTP10, "1.0"); STR(S_GET, "GET"); STR(S_HEAD, "HEAD");
    STR(S_gateway, "_gateway"); STR(S_access_log, "access_log"); STR(S_enabled, "enabled"); STR(S__buf, "_buf");
    STR(S_flush, "flush"); STR(S_native_next, "_native_next");
#undef STR
    CHUNKED_END = PyBytes_FromString("0\r\n\r\n");
    if (!CHUNKED_END) return NULL;
    PyObject *m = PyModule_Create(&lane_module);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, "Pool", (PyObject *)&PoolType) < 0 ||
        PyModule_AddObjectRef(m, "Upstream", (PyObject *)&UpstreamType) < 0 ||
        PyModule_AddObjectRef(m, "Tally", (PyObject *)&TallyType) < 0) { Py_DECREF(m); return NULL; }
    return m;
}
