package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
)

// A small reader of an RPM's lead and headers, enough to check what the
// package says about itself and its files without rpm installed. The format:
// https://rpm-software-management.github.io/rpm/manual/format_v4.html

// rpmLeadMagic starts every .rpm file; rpmHeaderMagic starts each header
// (signature and main), followed by the header version, 1.
var (
	rpmLeadMagic   = []byte{0xed, 0xab, 0xee, 0xdb}
	rpmHeaderMagic = []byte{0x8e, 0xad, 0xe8, 0x01}
)

// RPM header tags the tests read.
const (
	rpmTagName          = 1000
	rpmTagVersion       = 1001
	rpmTagRelease       = 1002
	rpmTagSummary       = 1004
	rpmTagLicense       = 1014
	rpmTagURL           = 1020
	rpmTagOS            = 1021
	rpmTagArch          = 1022
	rpmTagPrein         = 1023
	rpmTagPostin        = 1024
	rpmTagPreun         = 1025
	rpmTagPostun        = 1026
	rpmTagFileSizes     = 1028
	rpmTagFileModes     = 1030
	rpmTagFileDigests   = 1035
	rpmTagFileFlags     = 1037
	rpmTagFileUserName  = 1039
	rpmTagFileGroupName = 1040
	rpmTagRequireName   = 1049
	rpmTagPreinProg     = 1085
	rpmTagPostinProg    = 1086
	rpmTagPreunProg     = 1087
	rpmTagPostunProg    = 1088
	rpmTagDirIndexes    = 1116
	rpmTagBaseNames     = 1117
	rpmTagDirNames      = 1118
	rpmTagFileDigestAlg = 5011

	rpmFileConfig    = 1 << 0
	rpmFileNoReplace = 1 << 4
	rpmDigestSHA256  = 8
)

// rpmHeader is one header's entries by tag: strings for the string types,
// numbers for the integer types, bytes for BIN.
type rpmHeader struct {
	strings map[int][]string
	ints    map[int][]int64
	bins    map[int][]byte
}

func (h rpmHeader) str(tag int) string {
	if s := h.strings[tag]; len(s) > 0 {
		return s[0]
	}
	return ""
}

// rpmFile is one file of the package, from the main header.
type rpmFile struct {
	path         string
	mode         uint16
	user, group  string
	flags        int64
	size         int64
	digest       string
	digestSHA256 bool
}

// readRPM checks the lead and returns the main header.
func readRPM(r io.Reader) (rpmHeader, error) {
	lead := make([]byte, 96)
	if _, err := io.ReadFull(r, lead); err != nil {
		return rpmHeader{}, fmt.Errorf("lead: %w", err)
	}
	if !bytes.Equal(lead[:4], rpmLeadMagic) {
		return rpmHeader{}, fmt.Errorf("lead magic %x, want %x", lead[:4], rpmLeadMagic)
	}
	sigLen, _, err := readRPMHeader(r)
	if err != nil {
		return rpmHeader{}, fmt.Errorf("signature header: %w", err)
	}
	// The signature header is padded to a multiple of 8 bytes.
	if pad := (8 - sigLen%8) % 8; pad > 0 {
		if _, err := io.CopyN(io.Discard, r, int64(pad)); err != nil {
			return rpmHeader{}, fmt.Errorf("signature padding: %w", err)
		}
	}
	_, h, err := readRPMHeader(r)
	if err != nil {
		return rpmHeader{}, fmt.Errorf("main header: %w", err)
	}
	return h, nil
}

// readRPMHeader reads one header and returns its length in bytes.
func readRPMHeader(r io.Reader) (int, rpmHeader, error) {
	var intro [16]byte
	if _, err := io.ReadFull(r, intro[:]); err != nil {
		return 0, rpmHeader{}, err
	}
	if !bytes.Equal(intro[:4], rpmHeaderMagic) {
		return 0, rpmHeader{}, fmt.Errorf("magic %x, want %x", intro[:4], rpmHeaderMagic)
	}
	nindex := binary.BigEndian.Uint32(intro[8:12])
	hsize := binary.BigEndian.Uint32(intro[12:16])
	if nindex > 1<<16 || hsize > 1<<28 {
		return 0, rpmHeader{}, fmt.Errorf("implausible header: %d entries, %d bytes", nindex, hsize)
	}
	index := make([]byte, 16*nindex)
	if _, err := io.ReadFull(r, index); err != nil {
		return 0, rpmHeader{}, err
	}
	store := make([]byte, hsize)
	if _, err := io.ReadFull(r, store); err != nil {
		return 0, rpmHeader{}, err
	}
	h := rpmHeader{strings: map[int][]string{}, ints: map[int][]int64{}, bins: map[int][]byte{}}
	for i := range int(nindex) {
		e := index[16*i : 16*i+16]
		tag := int(binary.BigEndian.Uint32(e[0:4]))
		typ := binary.BigEndian.Uint32(e[4:8])
		off := int(binary.BigEndian.Uint32(e[8:12]))
		count := int(binary.BigEndian.Uint32(e[12:16]))
		if off > len(store) {
			return 0, rpmHeader{}, fmt.Errorf("tag %d: offset %d beyond the store's %d bytes", tag, off, len(store))
		}
		data := store[off:]
		switch typ {
		case 2, 3, 4, 5: // INT8, INT16, INT32, INT64
			size := map[uint32]int{2: 1, 3: 2, 4: 4, 5: 8}[typ]
			if count*size > len(data) {
				return 0, rpmHeader{}, fmt.Errorf("tag %d: %d values past the store's end", tag, count)
			}
			for j := range count {
				v := data[j*size : (j+1)*size]
				var n int64
				switch size {
				case 1:
					n = int64(v[0])
				case 2:
					n = int64(binary.BigEndian.Uint16(v))
				case 4:
					n = int64(binary.BigEndian.Uint32(v))
				case 8:
					n = int64(binary.BigEndian.Uint64(v))
				}
				h.ints[tag] = append(h.ints[tag], n)
			}
		case 6, 8, 9: // STRING, STRING_ARRAY, I18NSTRING
			for range count {
				end := bytes.IndexByte(data, 0)
				if end < 0 {
					return 0, rpmHeader{}, fmt.Errorf("tag %d: unterminated string", tag)
				}
				h.strings[tag] = append(h.strings[tag], string(data[:end]))
				data = data[end+1:]
			}
		case 7: // BIN
			if count > len(data) {
				return 0, rpmHeader{}, fmt.Errorf("tag %d: %d bytes past the store's end", tag, count)
			}
			h.bins[tag] = data[:count]
		}
	}
	return 16 + len(index) + len(store), h, nil
}

// files returns the package's files from the main header.
func (h rpmHeader) files() ([]rpmFile, error) {
	base, dirs, idx := h.strings[rpmTagBaseNames], h.strings[rpmTagDirNames], h.ints[rpmTagDirIndexes]
	modes, users, groups := h.ints[rpmTagFileModes], h.strings[rpmTagFileUserName], h.strings[rpmTagFileGroupName]
	flags, sizes, digests := h.ints[rpmTagFileFlags], h.ints[rpmTagFileSizes], h.strings[rpmTagFileDigests]
	n := len(base)
	for name, l := range map[string]int{"dir indexes": len(idx), "modes": len(modes), "users": len(users),
		"groups": len(groups), "flags": len(flags), "sizes": len(sizes), "digests": len(digests)} {
		if l != n {
			return nil, fmt.Errorf("%d base names but %d %s", n, l, name)
		}
	}
	sha := len(h.ints[rpmTagFileDigestAlg]) > 0 && h.ints[rpmTagFileDigestAlg][0] == rpmDigestSHA256
	out := make([]rpmFile, n)
	for i := range n {
		if int(idx[i]) >= len(dirs) {
			return nil, fmt.Errorf("file %s: dir index %d of %d", base[i], idx[i], len(dirs))
		}
		out[i] = rpmFile{
			path: dirs[idx[i]] + base[i], mode: uint16(modes[i]), user: users[i], group: groups[i],
			flags: flags[i], size: sizes[i], digest: digests[i], digestSHA256: sha,
		}
	}
	return out, nil
}
