package bpf

// The objects and bindings are committed, so building Skiff needs no clang;
// `make generate` rebuilds them (clang, llvm-strip and libbpf-dev headers).
//go:generate go tool bpf2go -cc clang -strip llvm-strip -cflags "-O2 -g -Wall -Werror" -target bpfel -type lb4_key -type lb4_service -type lb_slot_key -type lb4_backend -type lb4_frontend -type lb4_sock_key -type lb4_sock_val -type lb_affinity_key -type lb_affinity_val sock sock.c -- -I/usr/include/x86_64-linux-gnu -I/usr/include/aarch64-linux-gnu
//go:generate go tool bpf2go -cc clang -strip llvm-strip -cflags "-O2 -g -Wall -Werror" -target bpfel -type ct4_key -type ct4_val -type lb4_iface nodeport nodeport.c -- -I/usr/include/x86_64-linux-gnu -I/usr/include/aarch64-linux-gnu
//go:generate go tool bpf2go -cc clang -strip llvm-strip -cflags "-O2 -g -Wall -Werror" -target bpfel -type pol_endpoint -type pol_rule_key -type pol_rule -type pol_port_key -type pol_ct_key -type pol_ct_val -type pol_ep_key -type pol_ep_counters policy policy.c -- -I/usr/include/x86_64-linux-gnu -I/usr/include/aarch64-linux-gnu
