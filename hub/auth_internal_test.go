package hub

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	_ "github.com/droverhq/drover/proto/gen/drover/v1" // registers the API's descriptors
)

// TestEveryProcedureHasAPermission: the auth interceptor refuses a
// procedure it has no permission for, so a method added to the API
// without one would be unreachable.
func TestEveryProcedureHasAPermission(t *testing.T) {
	n := 0
	protoregistry.GlobalFiles.RangeFilesByPackage("drover.v1", func(fd protoreflect.FileDescriptor) bool {
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			for j := range sd.Methods().Len() {
				proc := fmt.Sprintf("/%s/%s", sd.FullName(), sd.Methods().Get(j).Name())
				n++
				if _, ok := procedurePermissions[proc]; !ok {
					t.Errorf("%s has no permission in procedurePermissions", proc)
				}
			}
		}
		return true
	})
	if n < 40 {
		t.Fatalf("only %d procedures found: are the descriptors registered?", n)
	}
}
