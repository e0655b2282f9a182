// Command mkimage writes one of Skiff's images as a docker archive:
//
//	mkimage -ref skiff.local/echo:v1 -bin _output/bin/echo-v1 -path /echo -o _output/images/echo-v1.tar
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/skiffnet/skiff/images"
)

func main() {
	var s images.Spec
	var out, push string
	flag.StringVar(&s.Ref, "ref", "", "image reference, e.g. skiff.local/echo:v1")
	flag.StringVar(&s.Binary, "bin", "", "static binary to put in the image")
	flag.StringVar(&s.Path, "path", "", "path of the binary in the image (the entrypoint)")
	flag.StringVar(&out, "o", "", "docker archive to write")
	flag.StringVar(&push, "push", "", "also push to this reference on a plain-HTTP registry")
	flag.Parse()
	if err := run(s, out, push); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(s images.Spec, out, push string) error {
	if out == "" && push == "" {
		return fmt.Errorf("nothing to do: pass -o FILE.tar and/or -push REF")
	}
	img, err := images.Build(s)
	if err != nil {
		return err
	}
	if out != "" {
		if err := images.WriteArchive(img, s.Ref, out); err != nil {
			return err
		}
	}
	if push != "" {
		return images.Push(img, push)
	}
	return nil
}
