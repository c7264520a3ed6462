/*
 * C side of the verbs driver. Each helper replaces a loop of cgo calls
 * with one: a cgo call costs tens of nanoseconds, and libibverbs' fast-path
 * entry points are static inline functions that dispatch through the
 * provider's ops table, which Go cannot call directly anyway.
 *
 * Rules the helpers keep (see doc.go): they never store a pointer they were
 * given after they return, never call back into Go, never block (the fds
 * they read are non-blocking) and never allocate: work-request chains live
 * on the C stack.
 */
#ifndef IPOIBD_VERBS_SHIM_H
#define IPOIBD_VERBS_SHIM_H

#include <stdint.h>
#include <infiniband/verbs.h>

/*
 * One completion, flattened from struct ibv_wc so that Go reads plain
 * fields instead of a struct with unions and enums whose layout cgo has to
 * guess.
 */
struct ipo_wc {
	uint64_t wr_id;
	uint32_t status;
	uint32_t byte_len;
	uint32_t src_qp;
	uint32_t wc_flags;
	uint32_t qp_num;
	uint16_t slid;
	uint16_t pkey_index;
	uint8_t sl;
	uint8_t dlid_path_bits;
	uint8_t pad[6];
};

/* One UD send: a registered slot, its length and where it goes. */
struct ipo_send {
	uint64_t wr_id;
	uint64_t addr;
	struct ibv_ah *ah;
	uint32_t length;
	uint32_t lkey;
	uint32_t remote_qpn;
	uint32_t remote_qkey;
};

int ipo_poll(struct ibv_cq *cq, struct ipo_wc *out, int n);
int ipo_cq_rearm(struct ibv_comp_channel *ch, struct ibv_cq *cq);
int ipo_post_send(struct ibv_qp *qp, const struct ipo_send *s, int n, int *posted);
int ipo_post_recv(struct ibv_qp *qp, uint64_t base, uint32_t size, uint32_t lkey,
		  uint64_t tag, const uint32_t *idx, int n, int *posted);
int ipo_async_event(struct ibv_context *ctx, int *type, int *port);
struct ibv_qp *ipo_create_ud_qp(struct ibv_pd *pd, struct ibv_cq *scq, struct ibv_cq *rcq,
				uint32_t send_depth, uint32_t recv_depth);
int ipo_ud_qp_ready(struct ibv_qp *qp, uint8_t port, uint16_t pkey_index, uint32_t qkey);
int ipo_set_qkey(struct ibv_qp *qp, uint32_t qkey);
int ipo_qp_to_error(struct ibv_qp *qp);
struct ibv_ah *ipo_create_ah(struct ibv_pd *pd, uint8_t port, uint16_t dlid, uint8_t sl,
			     uint8_t src_path_bits, uint8_t static_rate, int global,
			     const uint8_t *dgid, uint8_t sgid_index, uint32_t flow_label,
			     uint8_t hop_limit, uint8_t tclass);
int ipo_attach_mcast(struct ibv_qp *qp, const uint8_t *gid, uint16_t lid);
int ipo_detach_mcast(struct ibv_qp *qp, const uint8_t *gid, uint16_t lid);
struct ibv_device **ipo_device_list(int *n);
int ipo_query_port(struct ibv_context *ctx, uint8_t port, struct ibv_port_attr *attr);
struct ibv_mr *ipo_reg_mr(struct ibv_pd *pd, void *addr, size_t len);
ssize_t ipo_gid_table(struct ibv_context *ctx, struct ibv_gid_entry *out, size_t max);

#endif
