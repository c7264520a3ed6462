//go:build linux && cgo && !noverbs

/*
 * C helpers of the verbs driver; see shim.h for the rules they keep.
 * Written for ipoibd against the documented libibverbs API.
 *
 * Two builds of this file. With the rdma-core headers installed it calls
 * libibverbs and libibumad, loaded at run time with dlopen: the binary
 * then starts (and runs the simulator) on machines without them, and the
 * driver says which library is missing instead of the dynamic loader
 * refusing to start the program. The entry points are the exported ABI
 * functions, resolved once by ipo_load_verbs; the fast-path ones
 * (ibv_poll_cq, ibv_post_send, ibv_post_recv, ibv_req_notify_cq) are the
 * header's static inline dispatches through the provider's ops table, so
 * the data path costs exactly what it cost when linked.
 *
 * Without the headers every helper is a stub that fails with ENOSYS and
 * ipo_load_verbs says why: the package still compiles, so "go build ./..."
 * works on any machine with a C compiler.
 */
#define _GNU_SOURCE /* RTLD_DEFAULT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "shim.h"

#if defined(__has_include)
#if __has_include(<infiniband/verbs.h>) && __has_include(<infiniband/umad.h>)
#define IPO_HAVE_RDMA 1
#endif
#endif

#ifdef IPO_HAVE_RDMA

#include <dlfcn.h>
#include <poll.h>
#include <stddef.h>
#include <infiniband/umad.h>
#include <infiniband/verbs.h>

/* Sonames of the libraries, as rdma-core's packages install them. */
#define IPO_VERBS_SONAME "libibverbs.so.1"
#define IPO_UMAD_SONAME "libibumad.so.3"

/*
 * Every exported entry point the helpers call, one pointer each, typed
 * from the header's own declaration. A name that is also a function-like
 * macro in the header (ibv_query_port, ibv_reg_mr) is not expanded here
 * because no parenthesis follows it, so the pointer has the type of the
 * exported function.
 */
#define IPO_VERBS_FNS(X)                                                          \
	X(ibv_get_device_list) X(ibv_free_device_list) X(ibv_get_device_name)      \
	X(ibv_open_device) X(ibv_close_device) X(ibv_query_device)                \
	X(ibv_query_port) X(ibv_query_pkey) X(_ibv_query_gid_table)               \
	X(ibv_get_async_event) X(ibv_ack_async_event) X(ibv_alloc_pd)             \
	X(ibv_dealloc_pd) X(ibv_reg_mr) X(ibv_dereg_mr)                           \
	X(ibv_create_comp_channel) X(ibv_destroy_comp_channel) X(ibv_create_cq)   \
	X(ibv_destroy_cq) X(ibv_get_cq_event) X(ibv_ack_cq_events)                \
	X(ibv_create_qp) X(ibv_modify_qp) X(ibv_destroy_qp) X(ibv_create_ah)      \
	X(ibv_destroy_ah) X(ibv_attach_mcast) X(ibv_detach_mcast)

#define IPO_UMAD_FNS(X)                                                           \
	X(umad_init) X(umad_open_port) X(umad_register) X(umad_get_fd)            \
	X(umad_unregister) X(umad_close_port) X(umad_send) X(umad_recv)           \
	X(umad_get_port) X(umad_release_port)

#define IPO_PTR(f) static __typeof__(f) *ipo_p_##f;
IPO_VERBS_FNS(IPO_PTR)
IPO_UMAD_FNS(IPO_PTR)

/* P(f) is the loaded f. */
#define P(f) ipo_p_##f

int ipo_built_with_rdma(void)
{
	return 1;
}

/*
 * ipo_open_lib dlopens soname, or writes the loader's reason into why.
 * RTLD_LOCAL: providers that libibverbs loads link against it by soname
 * themselves, and nothing of ours should interpose on their symbols.
 */
static void *ipo_open_lib(const char *soname, char *why, size_t n)
{
	void *h = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		const char *e = dlerror();
		snprintf(why, n, "%s", e != NULL ? e : soname);
	}
	return h;
}

#define IPO_SYM(f)                                                                \
	if ((P(f) = (__typeof__(P(f)))dlsym(h, #f)) == NULL) {                    \
		snprintf(why, n, "%s has no %s (rdma-core too old?)", soname, #f); \
		return -1;                                                         \
	}

/* IPO_LOAD is the body of a loader: open soname, resolve every f of FNS. */
#define IPO_LOAD(name, FNS)                                                       \
	const char *soname = name;                                                \
	void *h = ipo_open_lib(soname, why, n);                                   \
	if (h == NULL)                                                            \
		return -1;                                                         \
	FNS(IPO_SYM)                                                              \
	return 0;

/* Go calls the loaders once each (sync.OnceValue), so they need no lock. */
int ipo_load_verbs(char *why, size_t n)
{
	IPO_LOAD(IPO_VERBS_SONAME, IPO_VERBS_FNS)
}

int ipo_load_umad(char *why, size_t n)
{
	IPO_LOAD(IPO_UMAD_SONAME, IPO_UMAD_FNS)
}

/* Work requests handed to the provider per ibv_post_* call. Longer batches
 * are split; the chain lives on the stack, so this bounds stack use. */
#define IPO_CHAIN 32

/*
 * ipo_poll copies up to n completions of cq into out and returns how many,
 * or a negative errno. A provider returns fewer than asked once the CQ is
 * empty, so we stop there instead of asking again.
 */
int ipo_poll(struct ibv_cq *cq, struct ipo_wc *out, int n)
{
	struct ibv_wc wc[IPO_CHAIN];
	int done = 0;

	while (done < n) {
		int want = n - done;
		if (want > IPO_CHAIN)
			want = IPO_CHAIN;
		int got = ibv_poll_cq(cq, want, wc);
		if (got < 0)
			return done > 0 ? done : -EIO;
		for (int i = 0; i < got; i++) {
			struct ipo_wc *o = &out[done + i];
			o->wr_id = wc[i].wr_id;
			o->status = wc[i].status;
			o->byte_len = wc[i].byte_len;
			o->src_qp = wc[i].src_qp;
			o->wc_flags = wc[i].wc_flags;
			o->qp_num = wc[i].qp_num;
			o->slid = wc[i].slid;
			o->pkey_index = wc[i].pkey_index;
			o->sl = wc[i].sl;
			o->dlid_path_bits = wc[i].dlid_path_bits;
		}
		done += got;
		if (got < want)
			break;
	}
	return done;
}

/*
 * ipo_cq_rearm consumes the pending event of a completion channel that
 * serves only cq (the fd is non-blocking), acknowledges it, and asks for
 * the next event. It returns the number of events consumed (0 or 1) or a
 * negative errno. A CQ is disarmed by the event it raises, so between two
 * re-arms at most one event is pending: reading until EAGAIN would cost a
 * second read(2) on every call for nothing. Should a provider ever queue
 * two, the fd stays readable and the loop calls again. The caller polls the
 * CQ afterwards: a completion that arrives after the re-arm raises a new
 * event, one that arrived before it is found by that poll, so none is lost.
 */
int ipo_cq_rearm(struct ibv_comp_channel *ch, struct ibv_cq *cq)
{
	struct ibv_cq *ev_cq;
	void *ev_ctx;
	int n = 0;

	if (P(ibv_get_cq_event)(ch, &ev_cq, &ev_ctx) == 0) {
		n = 1;
		P(ibv_ack_cq_events)(cq, 1);
	}
	int rc = ibv_req_notify_cq(cq, 0);
	if (rc != 0)
		return -(rc > 0 ? rc : EIO);
	return n;
}

/*
 * ipo_cq_take_event consumes and acknowledges the pending event of a
 * completion channel that serves only cq, without asking for the next:
 * for a CQ armed on demand, which its owner arms again only while it
 * waits for something. It returns the number of events consumed (0 or 1).
 */
int ipo_cq_take_event(struct ibv_comp_channel *ch, struct ibv_cq *cq)
{
	struct ibv_cq *ev_cq;
	void *ev_ctx;

	if (P(ibv_get_cq_event)(ch, &ev_cq, &ev_ctx) != 0)
		return 0;
	P(ibv_ack_cq_events)(cq, 1);
	return 1;
}

/*
 * IPO_POST_CHAINED is the body of ipo_post_send and ipo_post_recv, which
 * differ only in their work request type, provider call and how a request
 * is filled. It posts the caller's n requests, IPO_CHAIN per provider call;
 * the block after POST fills work request w and its one gather entry g
 * from the caller's request j. *posted says how many the provider took; the
 * body returns 0 or the errno of the first request it refused.
 */
#define IPO_POST_CHAINED(WR, POST, ...)                                           \
	WR wr[IPO_CHAIN];                                                         \
	struct ibv_sge sge[IPO_CHAIN];                                            \
	int done = 0;                                                             \
                                                                                  \
	*posted = 0;                                                              \
	while (done < n) {                                                        \
		int k = n - done;                                                 \
		if (k > IPO_CHAIN)                                                \
			k = IPO_CHAIN;                                            \
		for (int i = 0; i < k; i++) {                                     \
			WR *w = &wr[i];                                           \
			struct ibv_sge *g = &sge[i];                              \
			int j = done + i;                                         \
			__VA_ARGS__                                               \
			w->next = i + 1 < k ? &wr[i + 1] : NULL;                  \
			w->sg_list = g;                                           \
			w->num_sge = 1;                                           \
		}                                                                 \
		WR *bad = NULL;                                                   \
		int rc = POST(qp, wr, &bad);                                      \
		if (rc != 0) {                                                    \
			*posted = done + (bad != NULL ? (int)(bad - wr) : 0);     \
			return rc;                                                \
		}                                                                 \
		done += k;                                                        \
		*posted = done;                                                   \
	}                                                                         \
	return 0;

/* ipo_post_send posts n signalled UD sends. */
int ipo_post_send(struct ibv_qp *qp, const struct ipo_send *s, int n, int *posted)
{
	IPO_POST_CHAINED(struct ibv_send_wr, ibv_post_send, {
		const struct ipo_send *x = &s[j];
		memset(w, 0, sizeof(*w));
		g->addr = x->addr;
		g->length = x->length;
		g->lkey = x->lkey;
		w->wr_id = x->wr_id;
		w->opcode = IBV_WR_SEND;
		w->send_flags = IBV_SEND_SIGNALED;
		w->wr.ud.ah = x->ah;
		w->wr.ud.remote_qpn = x->remote_qpn;
		w->wr.ud.remote_qkey = x->remote_qkey;
	})
}

/*
 * ipo_post_recv posts n receive buffers of a slab registered at base with
 * lkey, each size bytes; idx holds buffer numbers, and each work request ID
 * is tag | number.
 */
int ipo_post_recv(struct ibv_qp *qp, uint64_t base, uint32_t size, uint32_t lkey,
		  uint64_t tag, const uint32_t *idx, int n, int *posted)
{
	IPO_POST_CHAINED(struct ibv_recv_wr, ibv_post_recv, {
		uint32_t b = idx[j];
		g->addr = base + (uint64_t)b * size;
		g->length = size;
		g->lkey = lkey;
		w->wr_id = tag | b;
	})
}

/*
 * ipo_async_event reads one asynchronous event from the device's
 * non-blocking async fd, acknowledges it at once (we keep nothing that
 * points into it) and reports its type and, for port events, the port.
 * It returns 0, or -1 with errno EAGAIN when no event is pending.
 */
int ipo_async_event(struct ibv_context *ctx, int *type, int *port)
{
	struct ibv_async_event ev;

	if (P(ibv_get_async_event)(ctx, &ev) != 0)
		return -1;
	*type = (int)ev.event_type;
	*port = 0;
	switch (ev.event_type) {
	case IBV_EVENT_PORT_ACTIVE:
	case IBV_EVENT_PORT_ERR:
	case IBV_EVENT_LID_CHANGE:
	case IBV_EVENT_PKEY_CHANGE:
	case IBV_EVENT_SM_CHANGE:
	case IBV_EVENT_CLIENT_REREGISTER:
	case IBV_EVENT_GID_CHANGE:
		*port = ev.element.port_num;
		break;
	default:
		break;
	}
	P(ibv_ack_async_event)(&ev);
	return 0;
}

/* Queue pairs and address handles. */

struct ibv_qp *ipo_create_ud_qp(struct ibv_pd *pd, struct ibv_cq *scq, struct ibv_cq *rcq,
				uint32_t send_depth, uint32_t recv_depth)
{
	struct ibv_qp_init_attr a;

	memset(&a, 0, sizeof(a));
	a.send_cq = scq;
	a.recv_cq = rcq;
	a.cap.max_send_wr = send_depth;
	a.cap.max_recv_wr = recv_depth;
	a.cap.max_send_sge = 1;
	a.cap.max_recv_sge = 1;
	a.qp_type = IBV_QPT_UD;
	a.sq_sig_all = 1;
	return P(ibv_create_qp)(pd, &a);
}

/*
 * ipo_ud_qp_ready walks a fresh UD QP through RESET, INIT, RTR and RTS
 * (IBA 10.3.1, QP state transitions; the attributes each step requires for
 * UD are those of IBA 11.2.4.2's table). It returns 0 or an errno, with
 * the failing step in the high byte so Go can name it.
 */
int ipo_ud_qp_ready(struct ibv_qp *qp, uint8_t port, uint16_t pkey_index, uint32_t qkey)
{
	struct ibv_qp_attr a;
	int rc;

	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_INIT;
	a.pkey_index = pkey_index;
	a.port_num = port;
	a.qkey = qkey;
	rc = P(ibv_modify_qp)(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_QKEY);
	if (rc != 0)
		return (1 << 8) | (rc & 0xff);

	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTR;
	rc = P(ibv_modify_qp)(qp, &a, IBV_QP_STATE);
	if (rc != 0)
		return (2 << 8) | (rc & 0xff);

	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTS;
	a.sq_psn = 0;
	rc = P(ibv_modify_qp)(qp, &a, IBV_QP_STATE | IBV_QP_SQ_PSN);
	if (rc != 0)
		return (3 << 8) | (rc & 0xff);
	return 0;
}

int ipo_set_qkey(struct ibv_qp *qp, uint32_t qkey)
{
	struct ibv_qp_attr a;

	memset(&a, 0, sizeof(a));
	a.qkey = qkey;
	return P(ibv_modify_qp)(qp, &a, IBV_QP_QKEY);
}

int ipo_qp_to_error(struct ibv_qp *qp)
{
	struct ibv_qp_attr a;

	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_ERR;
	return P(ibv_modify_qp)(qp, &a, IBV_QP_STATE);
}

struct ibv_ah *ipo_create_ah(struct ibv_pd *pd, uint8_t port, uint16_t dlid, uint8_t sl,
			     uint8_t src_path_bits, uint8_t static_rate, int global,
			     const uint8_t *dgid, uint8_t sgid_index, uint32_t flow_label,
			     uint8_t hop_limit, uint8_t tclass)
{
	struct ibv_ah_attr a;

	memset(&a, 0, sizeof(a));
	a.port_num = port;
	a.dlid = dlid;
	a.sl = sl;
	a.src_path_bits = src_path_bits;
	a.static_rate = static_rate;
	if (global) {
		a.is_global = 1;
		memcpy(a.grh.dgid.raw, dgid, 16);
		a.grh.sgid_index = sgid_index;
		a.grh.flow_label = flow_label;
		a.grh.hop_limit = hop_limit;
		a.grh.traffic_class = tclass;
	}
	return P(ibv_create_ah)(pd, &a);
}

int ipo_attach_mcast(struct ibv_qp *qp, const uint8_t *gid, uint16_t lid)
{
	union ibv_gid g;

	memcpy(g.raw, gid, 16);
	return P(ibv_attach_mcast)(qp, &g, lid);
}

int ipo_detach_mcast(struct ibv_qp *qp, const uint8_t *gid, uint16_t lid)
{
	union ibv_gid g;

	memcpy(g.raw, gid, 16);
	return P(ibv_detach_mcast)(qp, &g, lid);
}

/* Devices. */

struct ibv_device **ipo_device_list(int *n)
{
	return P(ibv_get_device_list)(n);
}

void ipo_free_device_list(struct ibv_device **list)
{
	P(ibv_free_device_list)(list);
}

const char *ipo_device_name(struct ibv_device *dev)
{
	return P(ibv_get_device_name)(dev);
}

struct ibv_context *ipo_open_device(struct ibv_device *dev)
{
	return P(ibv_open_device)(dev);
}

int ipo_close_device(struct ibv_context *ctx)
{
	return P(ibv_close_device)(ctx);
}

int ipo_async_fd(struct ibv_context *ctx)
{
	return ctx->async_fd;
}

int ipo_query_device(struct ibv_context *ctx, struct ipo_device_attr *out)
{
	struct ibv_device_attr a;

	memset(&a, 0, sizeof(a));
	int rc = P(ibv_query_device)(ctx, &a);
	if (rc != 0)
		return rc;
	memcpy(out->node_guid, &a.node_guid, sizeof(out->node_guid));
	out->phys_port_cnt = a.phys_port_cnt;
	return 0;
}

/*
 * ipo_query_port calls the exported ibv_query_port, which takes the
 * attribute struct of libibverbs 1.1 (the leading part of today's): every
 * field the driver reads is in it.
 */
int ipo_query_port(struct ibv_context *ctx, uint8_t port, struct ipo_port_attr *out)
{
	struct ibv_port_attr a;

	memset(&a, 0, sizeof(a));
	int rc = P(ibv_query_port)(ctx, port, (struct _compat_ibv_port_attr *)&a);
	if (rc != 0)
		return rc;
	memset(out, 0, sizeof(*out));
	out->state = a.state;
	out->link_layer = a.link_layer;
	out->lid = a.lid;
	out->lmc = a.lmc;
	out->sm_lid = a.sm_lid;
	out->sm_sl = a.sm_sl;
	out->active_mtu = a.active_mtu;
	out->max_mtu = a.max_mtu;
	out->active_width = a.active_width;
	out->active_speed = a.active_speed;
	out->pkey_tbl_len = a.pkey_tbl_len;
	return 0;
}

/* ipo_query_pkey stores the P_Key as the device gives it: big-endian. */
int ipo_query_pkey(struct ibv_context *ctx, uint8_t port, int index, uint16_t *pkey)
{
	__be16 be = 0;
	int rc = P(ibv_query_pkey)(ctx, port, index, &be);
	memcpy(pkey, &be, sizeof(be));
	return rc;
}

/*
 * ipo_gid_table reads every valid GID of every port in one call (the
 * exported function behind the static inline ibv_query_gid_table). It
 * returns the number of entries, or -1 with errno set.
 */
ssize_t ipo_gid_table(struct ibv_context *ctx, struct ipo_gid_entry *out, size_t max)
{
	struct ibv_gid_entry *raw = calloc(max > 0 ? max : 1, sizeof(*raw));
	if (raw == NULL) {
		errno = ENOMEM;
		return -1;
	}
	ssize_t got = P(_ibv_query_gid_table)(ctx, raw, max, 0, sizeof(*raw));
	if (got < 0) {
		free(raw);
		errno = (int)-got;
		return -1;
	}
	for (ssize_t i = 0; i < got; i++) {
		memcpy(out[i].gid, raw[i].gid.raw, sizeof(out[i].gid));
		out[i].gid_index = raw[i].gid_index;
		out[i].port_num = raw[i].port_num;
		out[i].ndev_ifindex = raw[i].ndev_ifindex;
		out[i].pad = 0;
	}
	free(raw);
	return got;
}

/* Protection domains, memory regions, CQs, QPs. */

struct ibv_pd *ipo_alloc_pd(struct ibv_context *ctx)
{
	return P(ibv_alloc_pd)(ctx);
}

int ipo_dealloc_pd(struct ibv_pd *pd)
{
	return P(ibv_dealloc_pd)(pd);
}

/* Receive and send slabs are written by the device (receives) or only read
 * by it (sends); local write access covers both. */
struct ibv_mr *ipo_reg_mr(struct ibv_pd *pd, void *addr, size_t len)
{
	return P(ibv_reg_mr)(pd, addr, len, IBV_ACCESS_LOCAL_WRITE);
}

uint32_t ipo_mr_lkey(struct ibv_mr *mr)
{
	return mr->lkey;
}

int ipo_dereg_mr(struct ibv_mr *mr)
{
	return P(ibv_dereg_mr)(mr);
}

struct ibv_comp_channel *ipo_create_comp_channel(struct ibv_context *ctx)
{
	return P(ibv_create_comp_channel)(ctx);
}

int ipo_comp_channel_fd(struct ibv_comp_channel *ch)
{
	return ch->fd;
}

int ipo_destroy_comp_channel(struct ibv_comp_channel *ch)
{
	return P(ibv_destroy_comp_channel)(ch);
}

struct ibv_cq *ipo_create_cq(struct ibv_context *ctx, int depth, struct ibv_comp_channel *ch)
{
	return P(ibv_create_cq)(ctx, depth, NULL, ch, 0);
}

int ipo_req_notify_cq(struct ibv_cq *cq)
{
	return ibv_req_notify_cq(cq, 0);
}

int ipo_destroy_cq(struct ibv_cq *cq)
{
	return P(ibv_destroy_cq)(cq);
}


uint32_t ipo_qp_num(struct ibv_qp *qp)
{
	return qp->qp_num;
}

int ipo_destroy_qp(struct ibv_qp *qp)
{
	return P(ibv_destroy_qp)(qp);
}

int ipo_destroy_ah(struct ibv_ah *ah)
{
	return P(ibv_destroy_ah)(ah);
}

/* libibumad. */

int ipo_umad_init(void)
{
	return P(umad_init)();
}

int ipo_umad_open_port(const char *ca, int port)
{
	return P(umad_open_port)(ca, port);
}

int ipo_umad_register(int portid, int mgmt_class, int class_version)
{
	return P(umad_register)(portid, mgmt_class, class_version, 0, NULL);
}

int ipo_umad_get_fd(int portid)
{
	return P(umad_get_fd)(portid);
}

int ipo_umad_unregister(int portid, int agent)
{
	return P(umad_unregister)(portid, agent);
}

int ipo_umad_close_port(int portid)
{
	return P(umad_close_port)(portid);
}

/*
 * MAD I/O goes through libibumad and libc, never through Go's own system
 * calls: that is libibumad's supported interface, and it lets a library
 * preloaded in front of libc (ibsim's libumad2sim) stand in for the
 * kernel's umad device.
 */
int ipo_umad_send(int portid, int agent, void *umad, int len, int timeout_ms)
{
	return P(umad_send)(portid, agent, umad, len, timeout_ms, 0);
}

int ipo_umad_recv(int portid, void *umad, int *len)
{
	int rc = P(umad_recv)(portid, umad, len, 0);
	if (rc < 0 && errno != 0)
		return -errno;
	return rc;
}

/* ipo_umad_wait polls fd for input through libc: 1 readable, 0 timeout,
 * -errno on failure. */
int ipo_umad_wait(int fd, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int rc = poll(&p, 1, timeout_ms);
	if (rc < 0)
		return -errno;
	if (rc > 0 && (p.revents & POLLIN))
		return 1;
	if (rc > 0 && (p.revents & POLLNVAL))
		return -EBADF; /* not a file (libumad2sim not in front of libc?) */
	if (rc > 0 && (p.revents & (POLLERR | POLLHUP)))
		return -EIO;
	return 0;
}

/* ipo_umad_simulated reports whether ibsim's libumad2sim is preloaded: its
 * umad "files" are not kernel file descriptors, so no epoll can watch them. */
int ipo_umad_simulated(void)
{
	return dlsym(RTLD_DEFAULT, "sim_client_init") != NULL;
}

int ipo_umad_port(const char *ca, int port, struct ipo_umad_port *out)
{
	umad_port_t p;
	memset(&p, 0, sizeof(p));
	int rc = P(umad_get_port)(ca[0] != 0 ? ca : NULL, port, &p);
	if (rc < 0)
		return rc;
	memset(out, 0, sizeof(*out));
	snprintf(out->ca_name, sizeof(out->ca_name), "%s", p.ca_name);
	out->port = p.portnum;
	out->base_lid = p.base_lid;
	out->lmc = p.lmc;
	out->sm_lid = p.sm_lid;
	out->sm_sl = p.sm_sl;
	out->state = p.state;
	out->phys_state = p.phys_state;
	out->rate = p.rate;
	memcpy(out->gid_prefix, &p.gid_prefix, 8);
	memcpy(out->port_guid, &p.port_guid, 8);
	for (unsigned i = 0; i < p.pkeys_size && i < IPO_UMAD_MAX_PKEYS; i++)
		out->pkeys[out->npkeys++] = p.pkeys[i];
	snprintf(out->link_layer, sizeof(out->link_layer), "%s", p.link_layer);
	P(umad_release_port)(&p);
	return 0;
}

/* Layout checks: the values and offsets the Go side hard-codes. */

static const int ipo_enum_values[] = {
	IBV_WC_SUCCESS, IBV_WC_LOC_LEN_ERR, IBV_WC_LOC_PROT_ERR, IBV_WC_WR_FLUSH_ERR, IBV_WC_GRH,
	IBV_EVENT_PORT_ACTIVE, IBV_EVENT_PORT_ERR, IBV_EVENT_LID_CHANGE, IBV_EVENT_PKEY_CHANGE,
	IBV_EVENT_SM_CHANGE, IBV_EVENT_DEVICE_FATAL, IBV_EVENT_CLIENT_REREGISTER, IBV_EVENT_GID_CHANGE,
	IBV_LINK_LAYER_UNSPECIFIED, IBV_LINK_LAYER_INFINIBAND, IBV_LINK_LAYER_ETHERNET,
};

int ipo_enum(int i)
{
	if (i < 0 || i >= (int)(sizeof(ipo_enum_values) / sizeof(ipo_enum_values[0])))
		return -1;
	return ipo_enum_values[i];
}

long ipo_umad_off(int field)
{
	switch (field) {
	case 0: return offsetof(struct ib_user_mad, agent_id);
	case 1: return offsetof(struct ib_user_mad, status);
	case 2: return offsetof(struct ib_user_mad, timeout_ms);
	case 3: return offsetof(struct ib_user_mad, retries);
	case 4: return offsetof(struct ib_user_mad, length);
	case 5: return offsetof(struct ib_user_mad, addr.qpn);
	case 6: return offsetof(struct ib_user_mad, addr.qkey);
	case 7: return offsetof(struct ib_user_mad, addr.lid);
	case 8: return offsetof(struct ib_user_mad, addr.sl);
	case 9: return offsetof(struct ib_user_mad, addr.path_bits);
	case 10: return offsetof(struct ib_user_mad, addr.grh_present);
	case 11: return offsetof(struct ib_user_mad, addr.gid_index);
	case 12: return offsetof(struct ib_user_mad, addr.hop_limit);
	case 13: return offsetof(struct ib_user_mad, addr.traffic_class);
	case 14: return offsetof(struct ib_user_mad, addr.gid);
	case 15: return offsetof(struct ib_user_mad, addr.flow_label);
	case 16: return offsetof(struct ib_user_mad, addr.pkey_index);
	case 17: return offsetof(struct ib_user_mad, data);
	}
	return -1;
}

#else /* !IPO_HAVE_RDMA */

/*
 * Built without the rdma-core headers: nothing here can reach a device.
 * The loaders say so; Go never calls the other helpers once a loader has
 * failed, and they fail with ENOSYS if it ever did.
 */

#define IPO_NO_HEADERS "built without the rdma-core headers (libibverbs-dev, libibumad-dev)"

int ipo_built_with_rdma(void)
{
	return 0;
}

int ipo_load_verbs(char *why, size_t n)
{
	snprintf(why, n, "%s", IPO_NO_HEADERS);
	return -1;
}

int ipo_load_umad(char *why, size_t n)
{
	snprintf(why, n, "%s", IPO_NO_HEADERS);
	return -1;
}

#define IPO_FAIL(v) do { errno = ENOSYS; return v; } while (0)

int ipo_poll(struct ibv_cq *cq, struct ipo_wc *out, int n) { IPO_FAIL(-ENOSYS); }
int ipo_cq_rearm(struct ibv_comp_channel *ch, struct ibv_cq *cq) { IPO_FAIL(-ENOSYS); }
int ipo_cq_take_event(struct ibv_comp_channel *ch, struct ibv_cq *cq) { IPO_FAIL(0); }
int ipo_post_send(struct ibv_qp *qp, const struct ipo_send *s, int n, int *posted) { *posted = 0; IPO_FAIL(ENOSYS); }
int ipo_post_recv(struct ibv_qp *qp, uint64_t base, uint32_t size, uint32_t lkey,
		  uint64_t tag, const uint32_t *idx, int n, int *posted) { *posted = 0; IPO_FAIL(ENOSYS); }
struct ibv_device **ipo_device_list(int *n) { *n = 0; IPO_FAIL(NULL); }
void ipo_free_device_list(struct ibv_device **list) {}
const char *ipo_device_name(struct ibv_device *dev) { return ""; }
struct ibv_context *ipo_open_device(struct ibv_device *dev) { IPO_FAIL(NULL); }
int ipo_close_device(struct ibv_context *ctx) { IPO_FAIL(ENOSYS); }
int ipo_async_fd(struct ibv_context *ctx) { return -1; }
int ipo_async_event(struct ibv_context *ctx, int *type, int *port) { IPO_FAIL(-1); }
int ipo_query_device(struct ibv_context *ctx, struct ipo_device_attr *out) { IPO_FAIL(ENOSYS); }
int ipo_query_port(struct ibv_context *ctx, uint8_t port, struct ipo_port_attr *out) { IPO_FAIL(ENOSYS); }
int ipo_query_pkey(struct ibv_context *ctx, uint8_t port, int index, uint16_t *pkey) { IPO_FAIL(ENOSYS); }
ssize_t ipo_gid_table(struct ibv_context *ctx, struct ipo_gid_entry *out, size_t max) { IPO_FAIL(-1); }
struct ibv_pd *ipo_alloc_pd(struct ibv_context *ctx) { IPO_FAIL(NULL); }
int ipo_dealloc_pd(struct ibv_pd *pd) { IPO_FAIL(ENOSYS); }
struct ibv_mr *ipo_reg_mr(struct ibv_pd *pd, void *addr, size_t len) { IPO_FAIL(NULL); }
uint32_t ipo_mr_lkey(struct ibv_mr *mr) { return 0; }
int ipo_dereg_mr(struct ibv_mr *mr) { IPO_FAIL(ENOSYS); }
struct ibv_comp_channel *ipo_create_comp_channel(struct ibv_context *ctx) { IPO_FAIL(NULL); }
int ipo_comp_channel_fd(struct ibv_comp_channel *ch) { return -1; }
int ipo_destroy_comp_channel(struct ibv_comp_channel *ch) { IPO_FAIL(ENOSYS); }
struct ibv_cq *ipo_create_cq(struct ibv_context *ctx, int depth, struct ibv_comp_channel *ch) { IPO_FAIL(NULL); }
int ipo_req_notify_cq(struct ibv_cq *cq) { IPO_FAIL(ENOSYS); }
int ipo_destroy_cq(struct ibv_cq *cq) { IPO_FAIL(ENOSYS); }
struct ibv_qp *ipo_create_ud_qp(struct ibv_pd *pd, struct ibv_cq *scq, struct ibv_cq *rcq,
				uint32_t send_depth, uint32_t recv_depth) { IPO_FAIL(NULL); }
uint32_t ipo_qp_num(struct ibv_qp *qp) { return 0; }
int ipo_ud_qp_ready(struct ibv_qp *qp, uint8_t port, uint16_t pkey_index, uint32_t qkey) { IPO_FAIL((1 << 8) | ENOSYS); }
int ipo_set_qkey(struct ibv_qp *qp, uint32_t qkey) { IPO_FAIL(ENOSYS); }
int ipo_qp_to_error(struct ibv_qp *qp) { IPO_FAIL(ENOSYS); }
int ipo_destroy_qp(struct ibv_qp *qp) { IPO_FAIL(ENOSYS); }
struct ibv_ah *ipo_create_ah(struct ibv_pd *pd, uint8_t port, uint16_t dlid, uint8_t sl,
			     uint8_t src_path_bits, uint8_t static_rate, int global,
			     const uint8_t *dgid, uint8_t sgid_index, uint32_t flow_label,
			     uint8_t hop_limit, uint8_t tclass) { IPO_FAIL(NULL); }
int ipo_destroy_ah(struct ibv_ah *ah) { IPO_FAIL(ENOSYS); }
int ipo_attach_mcast(struct ibv_qp *qp, const uint8_t *gid, uint16_t lid) { IPO_FAIL(ENOSYS); }
int ipo_detach_mcast(struct ibv_qp *qp, const uint8_t *gid, uint16_t lid) { IPO_FAIL(ENOSYS); }
int ipo_umad_init(void) { IPO_FAIL(-ENOSYS); }
int ipo_umad_open_port(const char *ca, int port) { IPO_FAIL(-ENOSYS); }
int ipo_umad_register(int portid, int mgmt_class, int class_version) { IPO_FAIL(-ENOSYS); }
int ipo_umad_get_fd(int portid) { return -1; }
int ipo_umad_unregister(int portid, int agent) { IPO_FAIL(-ENOSYS); }
int ipo_umad_close_port(int portid) { IPO_FAIL(-ENOSYS); }
int ipo_umad_send(int portid, int agent, void *umad, int len, int timeout_ms) { IPO_FAIL(-ENOSYS); }
int ipo_umad_recv(int portid, void *umad, int *len) { IPO_FAIL(-ENOSYS); }
int ipo_umad_wait(int fd, int timeout_ms) { IPO_FAIL(-ENOSYS); }
int ipo_umad_simulated(void) { return 0; }
int ipo_umad_port(const char *ca, int port, struct ipo_umad_port *out) { IPO_FAIL(-ENOSYS); }
int ipo_enum(int i) { return -1; }
long ipo_umad_off(int field) { return -1; }

#endif /* IPO_HAVE_RDMA */
