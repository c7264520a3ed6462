//go:build linux && cgo && !noverbs

/*
 * C helpers of the verbs driver; see shim.h for the rules they keep.
 * Written for ipoibd against the documented libibverbs API.
 */
#include <errno.h>
#include <string.h>
#include "shim.h"

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
 * ipo_cq_rearm consumes every pending event of a completion channel that
 * serves only cq (the fd is non-blocking), acknowledges them in one call,
 * and asks for the next event. It returns the number of events consumed or
 * a negative errno. The caller polls the CQ afterwards: a completion that
 * arrives after the re-arm raises a new event, one that arrived before it
 * is found by that poll, so none is lost.
 */
int ipo_cq_rearm(struct ibv_comp_channel *ch, struct ibv_cq *cq)
{
	struct ibv_cq *ev_cq;
	void *ev_ctx;
	int n = 0;

	while (ibv_get_cq_event(ch, &ev_cq, &ev_ctx) == 0)
		n++;
	if (n > 0)
		ibv_ack_cq_events(cq, (unsigned int)n);
	int rc = ibv_req_notify_cq(cq, 0);
	if (rc != 0)
		return -(rc > 0 ? rc : EIO);
	return n;
}

/*
 * ipo_post_send posts n UD sends, IPO_CHAIN per provider call. *posted says
 * how many the provider took; the return value is 0 or the errno of the
 * first one it refused.
 */
int ipo_post_send(struct ibv_qp *qp, const struct ipo_send *s, int n, int *posted)
{
	struct ibv_send_wr wr[IPO_CHAIN];
	struct ibv_sge sge[IPO_CHAIN];
	int done = 0;

	*posted = 0;
	while (done < n) {
		int k = n - done;
		if (k > IPO_CHAIN)
			k = IPO_CHAIN;
		for (int i = 0; i < k; i++) {
			const struct ipo_send *x = &s[done + i];
			sge[i].addr = x->addr;
			sge[i].length = x->length;
			sge[i].lkey = x->lkey;
			memset(&wr[i], 0, sizeof(wr[i]));
			wr[i].wr_id = x->wr_id;
			wr[i].next = i + 1 < k ? &wr[i + 1] : NULL;
			wr[i].sg_list = &sge[i];
			wr[i].num_sge = 1;
			wr[i].opcode = IBV_WR_SEND;
			wr[i].send_flags = IBV_SEND_SIGNALED;
			wr[i].wr.ud.ah = x->ah;
			wr[i].wr.ud.remote_qpn = x->remote_qpn;
			wr[i].wr.ud.remote_qkey = x->remote_qkey;
		}
		struct ibv_send_wr *bad = NULL;
		int rc = ibv_post_send(qp, wr, &bad);
		if (rc != 0) {
			int ok = bad != NULL ? (int)(bad - wr) : 0;
			*posted = done + ok;
			return rc;
		}
		done += k;
		*posted = done;
	}
	return 0;
}

/*
 * ipo_post_recv posts n receive buffers of a slab registered at base with
 * lkey, each size bytes; idx holds buffer numbers, and each work request ID
 * is tag | number.
 */
int ipo_post_recv(struct ibv_qp *qp, uint64_t base, uint32_t size, uint32_t lkey,
		  uint64_t tag, const uint32_t *idx, int n, int *posted)
{
	struct ibv_recv_wr wr[IPO_CHAIN];
	struct ibv_sge sge[IPO_CHAIN];
	int done = 0;

	*posted = 0;
	while (done < n) {
		int k = n - done;
		if (k > IPO_CHAIN)
			k = IPO_CHAIN;
		for (int i = 0; i < k; i++) {
			uint32_t b = idx[done + i];
			sge[i].addr = base + (uint64_t)b * size;
			sge[i].length = size;
			sge[i].lkey = lkey;
			wr[i].wr_id = tag | b;
			wr[i].next = i + 1 < k ? &wr[i + 1] : NULL;
			wr[i].sg_list = &sge[i];
			wr[i].num_sge = 1;
		}
		struct ibv_recv_wr *bad = NULL;
		int rc = ibv_post_recv(qp, wr, &bad);
		if (rc != 0) {
			int ok = bad != NULL ? (int)(bad - wr) : 0;
			*posted = done + ok;
			return rc;
		}
		done += k;
		*posted = done;
	}
	return 0;
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

	if (ibv_get_async_event(ctx, &ev) != 0)
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
	ibv_ack_async_event(&ev);
	return 0;
}

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
	return ibv_create_qp(pd, &a);
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
	rc = ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_QKEY);
	if (rc != 0)
		return (1 << 8) | (rc & 0xff);

	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTR;
	rc = ibv_modify_qp(qp, &a, IBV_QP_STATE);
	if (rc != 0)
		return (2 << 8) | (rc & 0xff);

	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTS;
	a.sq_psn = 0;
	rc = ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_SQ_PSN);
	if (rc != 0)
		return (3 << 8) | (rc & 0xff);
	return 0;
}

int ipo_set_qkey(struct ibv_qp *qp, uint32_t qkey)
{
	struct ibv_qp_attr a;

	memset(&a, 0, sizeof(a));
	a.qkey = qkey;
	return ibv_modify_qp(qp, &a, IBV_QP_QKEY);
}

int ipo_qp_to_error(struct ibv_qp *qp)
{
	struct ibv_qp_attr a;

	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_ERR;
	return ibv_modify_qp(qp, &a, IBV_QP_STATE);
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
	return ibv_create_ah(pd, &a);
}

int ipo_attach_mcast(struct ibv_qp *qp, const uint8_t *gid, uint16_t lid)
{
	union ibv_gid g;

	memcpy(g.raw, gid, 16);
	return ibv_attach_mcast(qp, &g, lid);
}

int ipo_detach_mcast(struct ibv_qp *qp, const uint8_t *gid, uint16_t lid)
{
	union ibv_gid g;

	memcpy(g.raw, gid, 16);
	return ibv_detach_mcast(qp, &g, lid);
}

/* ipo_gid_table wraps the static inline ibv_query_gid_table for cgo. */
ssize_t ipo_gid_table(struct ibv_context *ctx, struct ibv_gid_entry *out, size_t max)
{
	return ibv_query_gid_table(ctx, out, max, 0);
}

/* The three wrappers below stand in for libibverbs macros, which cgo
 * cannot call. ipo_device_list leaves errno as libibverbs set it. */
struct ibv_device **ipo_device_list(int *n)
{
	return ibv_get_device_list(n);
}

int ipo_query_port(struct ibv_context *ctx, uint8_t port, struct ibv_port_attr *attr)
{
	return ibv_query_port(ctx, port, attr);
}

/* Receive and send slabs are written by the device (receives) or only read
 * by it (sends); local write access covers both. */
struct ibv_mr *ipo_reg_mr(struct ibv_pd *pd, void *addr, size_t len)
{
	return ibv_reg_mr(pd, addr, len, IBV_ACCESS_LOCAL_WRITE);
}
