package bpf

import (
	"encoding/binary"
	"net/netip"
)

// The maps hold addresses and ports as the kernel's sock_addr context does:
// network byte order in memory, read as host-order integers by Go.

// Addr4 encodes an IPv4 address for a map.
func Addr4(a netip.Addr) uint32 {
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:])
}

// Port encodes a port for a map.
func Port(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

// DecodeAddr4 is the inverse of Addr4.
func DecodeAddr4(v uint32) netip.Addr {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// DecodePort is the inverse of Port.
func DecodePort(v uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], v)
	return binary.BigEndian.Uint16(b[:])
}
