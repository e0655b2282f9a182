package records

import "net/netip"

// PodIP parses the first label of a spec 2.6 pod name, a-b-c-d.ns.pod.zone
// (or the IPv6 form with dashes for colons, as CoreDNS answers it). These
// names are computed from the question, not stored, so any address answers.
// It does not allocate for IPv4 labels: it runs on the query hot path.
func PodIP(label []byte) (netip.Addr, bool) {
	if ip, ok := podIPv4(label); ok {
		return ip, true
	}
	if len(label) < 2 || len(label) > 39 {
		return netip.Addr{}, false
	}
	var buf [39]byte
	for i, c := range label {
		switch {
		case c == '-':
			c = ':'
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f', c >= 'A' && c <= 'F':
		default:
			return netip.Addr{}, false
		}
		buf[i] = c
	}
	ip, err := netip.ParseAddr(string(buf[:len(label)]))
	if err != nil || !ip.Is6() || ip.Is4In6() || ip.Zone() != "" {
		return netip.Addr{}, false
	}
	return ip, true
}

func podIPv4(label []byte) (netip.Addr, bool) {
	var b [4]byte
	part, digits := 0, 0
	v := 0
	for _, c := range label {
		switch {
		case c >= '0' && c <= '9':
			v = v*10 + int(c-'0')
			digits++
			if digits > 3 || v > 255 {
				return netip.Addr{}, false
			}
		case c == '-':
			if digits == 0 || part == 3 {
				return netip.Addr{}, false
			}
			b[part] = byte(v)
			part, digits, v = part+1, 0, 0
		default:
			return netip.Addr{}, false
		}
	}
	if part != 3 || digits == 0 {
		return netip.Addr{}, false
	}
	b[3] = byte(v)
	return netip.AddrFrom4(b), true
}
