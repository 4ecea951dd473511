package cohort

// members holds a rule's memberState per caller id. The states of registered users are
// in a slice indexed by their registry slot (read in slot order by the evaluation's pass
// over the registry: no hashing, no map growth); those of everyone else (callers known
// from traffic only, companies) in a map to a slot of a slab, so that a member already
// known costs one lookup. Only the map counts towards maxActed: the slice is bounded by
// the registry.
type members struct {
	dense []memberState // by registry slot, up to the first slot never written
	// denseIDs are the registry's ids the dense slots refer to (the registry only
	// appends to them until a Load, which starts a new epoch).
	denseIDs []string
	epoch    uint64 // the registry epoch of dense
	version  uint64 // the registry version dense was last synced with; 0: sync
	nDense   int    // dense states that are not zero

	index map[string]int32
	slots []memberSlot
	free  []int32
}

type memberSlot struct {
	id string // "" when the slot is free
	memberState
}

func newMembers() members { return members{index: map[string]int32{}} }

// sync brings the states in line with the registry's slots (the caller holds its read
// lock): after a Load the dense states move to their users' new slots (or to the map,
// for users no longer registered), and the map's states of users registered since move
// to their slots.
func (m *members) sync(r *Registry) {
	if m.version == r.version && m.epoch == r.epoch {
		m.denseIDs = r.ids
		return
	}
	if m.epoch != r.epoch {
		old, oldIDs := m.dense, m.denseIDs
		m.dense, m.nDense = nil, 0
		for i, st := range old {
			if st != (memberState{}) {
				m.addID(oldIDs[i], st)
			}
		}
	}
	m.epoch, m.version, m.denseIDs = r.epoch, r.version, r.ids
	for id, i := range m.index {
		if slot, ok := r.index[id]; ok {
			st := m.slots[i].memberState
			m.drop(i)
			m.merge(slot, st)
		}
	}
}

// merge combines st into the dense state of slot.
func (m *members) merge(slot int32, st memberState) {
	p := m.denseAt(slot)
	if *p == (memberState{}) {
		m.nDense++
		*p = st
		return
	}
	if p.entered == 0 {
		p.entered, p.seen = st.entered, st.seen
	}
	p.acted = max(p.acted, st.acted)
}

// denseAt returns the state of a registry slot, growing the slice as needed.
func (m *members) denseAt(slot int32) *memberState {
	if int(slot) >= len(m.dense) {
		n := max(int(slot)+1, 2*len(m.dense), 1024)
		n = min(n, max(len(m.denseIDs), int(slot)+1))
		grown := make([]memberState, n)
		copy(grown, m.dense)
		m.dense = grown
	}
	return &m.dense[slot]
}

// lookup returns the state of a candidate (a registered user by its slot, else by id),
// nil when it has none.
func (m *members) lookup(slot int32, id string) *memberState {
	if slot >= 0 {
		if int(slot) < len(m.dense) && m.dense[slot] != (memberState{}) {
			return &m.dense[slot]
		}
		return nil
	}
	if i, ok := m.index[id]; ok {
		return &m.slots[i].memberState
	}
	return nil
}

// full reports whether a new id without a registry slot would exceed maxActed.
func (m *members) full(slot int32) bool { return slot < 0 && len(m.index) >= maxActed }

// put sets the state of a candidate that has none (st is not zero).
func (m *members) put(slot int32, id string, st memberState) {
	if slot >= 0 {
		*m.denseAt(slot) = st
		m.nDense++
		return
	}
	m.addID(id, st)
}

// addID gives id a map slot holding st; id must not have one.
func (m *members) addID(id string, st memberState) {
	var i int32
	if n := len(m.free); n > 0 {
		i = m.free[n-1]
		m.free = m.free[:n-1]
		m.slots[i] = memberSlot{id: id, memberState: st}
	} else {
		i = int32(len(m.slots))
		m.slots = append(m.slots, memberSlot{id: id, memberState: st})
	}
	m.index[id] = i
}

// setID sets the state of id in the map (states of registered users move to their slot
// at the next sync); it is for restoring and carrying states over, not for evaluation.
func (m *members) setID(id string, st memberState) {
	if i, ok := m.index[id]; ok {
		m.slots[i].memberState = st
		return
	}
	m.addID(id, st)
	m.version = 0 // sync moves it to its slot if the user is registered
}

// drop frees map slot i.
func (m *members) drop(i int32) {
	delete(m.index, m.slots[i].id)
	m.slots[i] = memberSlot{}
	m.free = append(m.free, i)
}

// each calls fn for every id with a state, in no particular order; fn may set the state
// to zero to forget it.
func (m *members) each(fn func(id string, st *memberState)) {
	for i := range m.dense {
		if st := &m.dense[i]; *st != (memberState{}) {
			fn(m.denseIDs[i], st)
			if *st == (memberState{}) {
				m.nDense--
			}
		}
	}
	for i := range m.slots {
		if s := &m.slots[i]; s.id != "" {
			fn(s.id, &s.memberState)
			if s.memberState == (memberState{}) {
				m.drop(int32(i))
			}
		}
	}
}
