/*
 * C side of the verbs driver. Each helper replaces a loop of cgo calls
 * with one: a cgo call costs tens of nanoseconds, and libibverbs' fast-path
 * entry points are static inline functions that dispatch through the
 * provider's ops table, which Go cannot call directly anyway.
 *
 * This header names no rdma-core type: the Go side sees the verbs objects
 * only as pointers to incomplete structs and reads what it needs through
 * the flattened structs and accessors below. That is what lets the package
 * compile where the rdma-core headers are not installed: shim.c then
 * builds stubs that report why the driver cannot run (see doc.go).
 *
 * Rules the helpers keep (see doc.go): they never store a pointer they were
 * given after they return, never call back into Go, never block (the fds
 * they read are non-blocking) and never allocate on the data path:
 * work-request chains live on the C stack.
 */
#ifndef IPOIBD_VERBS_SHIM_H
#define IPOIBD_VERBS_SHIM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct ibv_device;
struct ibv_context;
struct ibv_pd;
struct ibv_cq;
struct ibv_comp_channel;
struct ibv_qp;
struct ibv_ah;
struct ibv_mr;

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

/* The parts of struct ibv_port_attr the driver reads. */
struct ipo_port_attr {
	uint32_t active_speed;
	uint16_t lid;
	uint16_t sm_lid;
	uint16_t pkey_tbl_len;
	uint8_t state;
	uint8_t link_layer;
	uint8_t lmc;
	uint8_t sm_sl;
	uint8_t active_mtu;
	uint8_t max_mtu;
	uint8_t active_width;
	uint8_t pad[3];
};

/* The parts of struct ibv_device_attr the driver reads. */
struct ipo_device_attr {
	uint8_t node_guid[8]; /* network byte order */
	uint32_t phys_port_cnt;
};

/* One valid GID table entry (struct ibv_gid_entry). */
struct ipo_gid_entry {
	uint8_t gid[16];
	uint32_t gid_index;
	uint32_t port_num;
	uint32_t ndev_ifindex;
	uint32_t pad;
};

/*
 * Loading. ipo_load_verbs opens libibverbs.so.1 at run time and resolves
 * every entry point the driver calls; ipo_load_umad does the same for
 * libibumad.so.3, which only InfiniBand MAD ports need. Both return 0, or
 * -1 with the reason in why. Without the rdma-core headers at build time
 * they always fail, saying so.
 */
int ipo_built_with_rdma(void);
int ipo_load_verbs(char *why, size_t n);
int ipo_load_umad(char *why, size_t n);

/* Data path. */
int ipo_poll(struct ibv_cq *cq, struct ipo_wc *out, int n);
int ipo_cq_rearm(struct ibv_comp_channel *ch, struct ibv_cq *cq);
int ipo_cq_take_event(struct ibv_comp_channel *ch, struct ibv_cq *cq);
int ipo_post_send(struct ibv_qp *qp, const struct ipo_send *s, int n, int *posted);
int ipo_post_recv(struct ibv_qp *qp, uint64_t base, uint32_t size, uint32_t lkey,
		  uint64_t tag, const uint32_t *idx, int n, int *posted);

/* Devices. */
struct ibv_device **ipo_device_list(int *n);
void ipo_free_device_list(struct ibv_device **list);
const char *ipo_device_name(struct ibv_device *dev);
struct ibv_context *ipo_open_device(struct ibv_device *dev);
int ipo_close_device(struct ibv_context *ctx);
int ipo_async_fd(struct ibv_context *ctx);
int ipo_async_event(struct ibv_context *ctx, int *type, int *port);
int ipo_query_device(struct ibv_context *ctx, struct ipo_device_attr *out);
int ipo_query_port(struct ibv_context *ctx, uint8_t port, struct ipo_port_attr *out);
int ipo_query_pkey(struct ibv_context *ctx, uint8_t port, int index, uint16_t *pkey);
ssize_t ipo_gid_table(struct ibv_context *ctx, struct ipo_gid_entry *out, size_t max);

/* Protection domains, memory regions, CQs, QPs, address handles. */
struct ibv_pd *ipo_alloc_pd(struct ibv_context *ctx);
int ipo_dealloc_pd(struct ibv_pd *pd);
struct ibv_mr *ipo_reg_mr(struct ibv_pd *pd, void *addr, size_t len);
uint32_t ipo_mr_lkey(struct ibv_mr *mr);
int ipo_dereg_mr(struct ibv_mr *mr);
struct ibv_comp_channel *ipo_create_comp_channel(struct ibv_context *ctx);
int ipo_comp_channel_fd(struct ibv_comp_channel *ch);
int ipo_destroy_comp_channel(struct ibv_comp_channel *ch);
struct ibv_cq *ipo_create_cq(struct ibv_context *ctx, int depth, struct ibv_comp_channel *ch);
int ipo_req_notify_cq(struct ibv_cq *cq);
int ipo_destroy_cq(struct ibv_cq *cq);
struct ibv_qp *ipo_create_ud_qp(struct ibv_pd *pd, struct ibv_cq *scq, struct ibv_cq *rcq,
				uint32_t send_depth, uint32_t recv_depth);
uint32_t ipo_qp_num(struct ibv_qp *qp);
int ipo_ud_qp_ready(struct ibv_qp *qp, uint8_t port, uint16_t pkey_index, uint32_t qkey);
int ipo_set_qkey(struct ibv_qp *qp, uint32_t qkey);
int ipo_qp_to_error(struct ibv_qp *qp);
int ipo_destroy_qp(struct ibv_qp *qp);
struct ibv_ah *ipo_create_ah(struct ibv_pd *pd, uint8_t port, uint16_t dlid, uint8_t sl,
			     uint8_t src_path_bits, uint8_t static_rate, int global,
			     const uint8_t *dgid, uint8_t sgid_index, uint32_t flow_label,
			     uint8_t hop_limit, uint8_t tclass);
int ipo_destroy_ah(struct ibv_ah *ah);
int ipo_attach_mcast(struct ibv_qp *qp, const uint8_t *gid, uint16_t lid);
int ipo_detach_mcast(struct ibv_qp *qp, const uint8_t *gid, uint16_t lid);

/* libibumad. */
int ipo_umad_init(void);
int ipo_umad_open_port(const char *ca, int port);
int ipo_umad_register(int portid, int mgmt_class, int class_version);
int ipo_umad_get_fd(int portid);
int ipo_umad_unregister(int portid, int agent);
int ipo_umad_close_port(int portid);
int ipo_umad_send(int portid, int agent, void *umad, int len, int timeout_ms);
int ipo_umad_recv(int portid, void *umad, int *len);
int ipo_umad_wait(int fd, int timeout_ms);
int ipo_umad_simulated(void);

/* What umad_get_port reports of a port (libibumad reads it from sysfs). */
#define IPO_UMAD_MAX_PKEYS 128
struct ipo_umad_port {
	char ca_name[64];
	int32_t port;
	uint32_t base_lid, lmc, sm_lid, sm_sl, state, phys_state, rate;
	uint8_t gid_prefix[8], port_guid[8];
	uint32_t npkeys;
	uint16_t pkeys[IPO_UMAD_MAX_PKEYS];
	char link_layer[32];
};
int ipo_umad_port(const char *ca, int port, struct ipo_umad_port *out);

/* Layout checks for the tests: -1 when built without the headers. */
int ipo_enum(int i);
long ipo_umad_off(int field);

#endif
