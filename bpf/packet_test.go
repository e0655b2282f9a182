package bpf_test

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// packet is an Ethernet/IPv4 TCP or UDP packet as the tc programs see it.
type packet struct {
	Src, Dst netip.AddrPort
	Proto    uint8
	Flags    uint8 // TCP flags
	Seq, Ack uint32
	Payload  []byte
	NoCsum   bool // UDP without checksum
	// OtherHost addresses the frame to another host's MAC, as a switch
	// that floods it delivers it.
	OtherHost bool
}

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

var (
	macNode   = [6]byte{0x02, 0, 0, 0, 0, 0x01}
	macClient = [6]byte{0x02, 0, 0, 0, 0, 0x02}
	macOther  = [6]byte{0x02, 0, 0, 0, 0, 0x03}
)

func csumAdd(sum uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	return sum
}

func csumFold(sum uint32) uint16 {
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

func pseudoSum(src, dst netip.Addr, proto uint8, l4len int) uint32 {
	s, d := src.As4(), dst.As4()
	sum := csumAdd(0, s[:])
	sum = csumAdd(sum, d[:])
	return sum + uint32(proto) + uint32(l4len)
}

// bytes encodes the packet with correct checksums. TCP carries 20 bytes of
// options (MSS, SACK permitted, timestamps), as a Linux SYN does.
func (p packet) bytes() []byte {
	var l4 []byte
	switch p.Proto {
	case unix.IPPROTO_TCP:
		l4 = make([]byte, 40, 40+len(p.Payload))
		binary.BigEndian.PutUint16(l4[0:], p.Src.Port())
		binary.BigEndian.PutUint16(l4[2:], p.Dst.Port())
		binary.BigEndian.PutUint32(l4[4:], p.Seq)
		binary.BigEndian.PutUint32(l4[8:], p.Ack)
		l4[12] = 10 << 4
		l4[13] = p.Flags
		binary.BigEndian.PutUint16(l4[14:], 64240)
		copy(l4[20:], []byte{2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7})
		l4 = append(l4, p.Payload...)
		binary.BigEndian.PutUint16(l4[16:], csumFold(csumAdd(pseudoSum(p.Src.Addr(), p.Dst.Addr(), p.Proto, len(l4)), l4)))
	case unix.IPPROTO_UDP:
		l4 = make([]byte, 8, 8+len(p.Payload))
		binary.BigEndian.PutUint16(l4[0:], p.Src.Port())
		binary.BigEndian.PutUint16(l4[2:], p.Dst.Port())
		l4 = append(l4, p.Payload...)
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		if !p.NoCsum {
			c := csumFold(csumAdd(pseudoSum(p.Src.Addr(), p.Dst.Addr(), p.Proto, len(l4)), l4))
			if c == 0 {
				c = 0xffff
			}
			binary.BigEndian.PutUint16(l4[6:], c)
		}
	}
	b := make([]byte, 14+20, 14+20+len(l4))
	copy(b[0:], macNode[:])
	if p.OtherHost {
		copy(b[0:], macOther[:])
	}
	copy(b[6:], macClient[:])
	binary.BigEndian.PutUint16(b[12:], unix.ETH_P_IP)
	ip := b[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
	binary.BigEndian.PutUint16(ip[4:], 0x1234)
	ip[6] = 0x40 // DF
	ip[8] = 64
	ip[9] = p.Proto
	s, d := p.Src.Addr().As4(), p.Dst.Addr().As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	binary.BigEndian.PutUint16(ip[10:], csumFold(csumAdd(0, ip[:20])))
	return append(b, l4...)
}

// frame is a packet a program wrote, with its MAC addresses.
type frame struct {
	packet
	SrcMAC, DstMAC [6]byte
}

// parsePacket decodes b and checks both checksums.
func parsePacket(t *testing.T, b []byte) frame {
	t.Helper()
	if len(b) < 14+20 || binary.BigEndian.Uint16(b[12:]) != unix.ETH_P_IP {
		t.Fatalf("not an IPv4 frame: % x", b)
	}
	var f frame
	copy(f.DstMAC[:], b[0:6])
	copy(f.SrcMAC[:], b[6:12])
	ip := b[14:]
	ihl := int(ip[0]&0xf) * 4
	if s := csumFold(csumAdd(0, ip[:ihl])); s != 0 {
		t.Errorf("bad IPv4 header checksum (sum %#x)", s)
	}
	total := int(binary.BigEndian.Uint16(ip[2:]))
	l4 := ip[ihl:total]
	f.Proto = ip[9]
	src, dst := netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
	f.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4[0:]))
	f.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:]))
	switch f.Proto {
	case unix.IPPROTO_TCP:
		f.Seq = binary.BigEndian.Uint32(l4[4:])
		f.Ack = binary.BigEndian.Uint32(l4[8:])
		f.Flags = l4[13]
		f.Payload = l4[int(l4[12]>>4)*4:]
	case unix.IPPROTO_UDP:
		f.Payload = l4[8:]
		f.NoCsum = binary.BigEndian.Uint16(l4[6:]) == 0
	}
	if !f.NoCsum {
		if s := csumFold(csumAdd(pseudoSum(src, dst, f.Proto, len(l4)), l4)); s != 0 {
			t.Errorf("bad %d checksum (sum %#x) in %s", f.Proto, s, f)
		}
	}
	return f
}

func (p packet) String() string {
	return fmt.Sprintf("%d %s -> %s flags %#x seq %d ack %d", p.Proto, p.Src, p.Dst, p.Flags, p.Seq, p.Ack)
}
