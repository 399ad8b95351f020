package state

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	fsmv1 "github.com/droverhq/drover/proto/gen/drover/fsm/v1"
)

// InitCluster sets the cluster's identity and its first admin token. It
// happens once, when a new cluster is bootstrapped; a second call is refused.
func (s *Store) InitCluster(c Change, meta *fsmv1.ClusterMeta, admin *fsmv1.TokenRecord) error {
	return s.write(c, func(t *txn) error {
		if existing := metaValue[*fsmv1.ClusterMeta](t.Txn, metaCluster); existing != nil {
			return AlreadyExistsf("the cluster is already initialised (id %s)", existing.GetClusterId())
		}
		if meta.GetClusterId() == "" || meta.GetPeerSecret() == "" {
			return Invalidf("cluster id and peer secret are required")
		}
		if err := t.Insert(tableMeta, &metaRow{Key: metaCluster, Value: meta}); err != nil {
			return err
		}
		if admin != nil {
			if err := insertToken(t, admin); err != nil {
				return err
			}
		}
		return t.audit("cluster.init", "cluster/"+meta.GetClusterId(), "cluster bootstrapped")
	})
}

// UpsertNode records a node's addresses, adding it if it is new.
func (s *Store) UpsertNode(c Change, n *fsmv1.Node) error {
	return s.write(c, func(t *txn) error {
		if err := ValidateName("node name", n.GetName()); err != nil {
			return err
		}
		if n.GetRaftAddress() == "" || n.GetHttpAddress() == "" {
			return Invalidf("node %q needs a raft address and an HTTP address", n.GetName())
		}
		old, _ := t.First(tableNodes, "id", n.GetName())
		if old != nil && proto.Equal(old.(*fsmv1.Node), n) {
			return nil // nothing to change, and nothing to audit
		}
		if err := t.Insert(tableNodes, proto.Clone(n)); err != nil {
			return err
		}
		verb := "node.join"
		if old != nil {
			verb = "node.update"
		}
		return t.audit(verb, "node/"+n.GetName(), fmt.Sprintf("raft %s, http %s, version %s", n.GetRaftAddress(), n.GetHttpAddress(), n.GetVersion()))
	})
}

// RemoveNode forgets a node. Removing an unknown node is not an error, so
// that a retried removal succeeds.
func (s *Store) RemoveNode(c Change, name string) error {
	return s.write(c, func(t *txn) error {
		old, err := t.First(tableNodes, "id", name)
		if err != nil || old == nil {
			return err
		}
		if err := t.Delete(tableNodes, old); err != nil {
			return err
		}
		return t.audit("node.remove", "node/"+name, "removed from the cluster")
	})
}

func metaValue[T any](t interface {
	First(string, string, ...any) (any, error)
}, key string) T {
	var zero T
	raw, err := t.First(tableMeta, "id", key)
	if err != nil || raw == nil {
		return zero
	}
	return raw.(*metaRow).Value.(T)
}

// ClusterMeta returns the cluster's identity, or nil before bootstrap.
func (v *Snapshot) ClusterMeta() *fsmv1.ClusterMeta {
	return metaValue[*fsmv1.ClusterMeta](v.txn, metaCluster)
}

// Nodes returns every known node, by name.
func (v *Snapshot) Nodes() []*fsmv1.Node {
	return collect[*fsmv1.Node](v.all(tableNodes, "id"))
}

// Node returns one node, or nil.
func (v *Snapshot) Node(name string) *fsmv1.Node {
	raw := v.first(tableNodes, name)
	if raw == nil {
		return nil
	}
	return raw.(*fsmv1.Node)
}
