// Package cohort is Vigil's customer-success half: a registry of the API's users
// (who they are: e-mail, company, sign-up time, plan, attributes), time to first hello
// world, and cohort rules that select users or companies by who they are and what they
// did, and act once per member as it enters: an e-mail to the user, a notification to
// an internal channel. It knows nothing of Caddy.
package cohort

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"sort"
	"strings"
	"sync"
	"time"
)

// User is one registered user of the API.
type User struct {
	// ID is the user id the gateway identifies callers by (the identify user value).
	ID string `json:"id"`
	// Email is where behavioral e-mails go.
	Email string `json:"email,omitempty"`
	// Name is the user's name, for greetings.
	Name string `json:"name,omitempty"`
	// Company is the user's company (account) id.
	Company string `json:"company,omitempty"`
	// CreatedAt is when the user signed up.
	CreatedAt time.Time `json:"created_at,omitzero"`
	// Plan is the user's plan ("free", "pro").
	Plan string `json:"plan,omitempty"`
	// Attributes are free-form fields (se_email, country...).
	Attributes map[string]string `json:"attributes,omitempty"`
}

// Registry holds the registered users, bounded. Safe for concurrent use.
//
// Users live in a slab, each at a fixed slot for the registry's life (until Load), so
// that a pass over all users reads memory in order and a cohort rule can keep its
// members' state in a slice indexed by slot instead of a map.
type Registry struct {
	mu      sync.RWMutex
	max     int
	index   map[string]int32 // id -> slot
	ids     []string         // slot -> id; only appended to (until Load)
	entries []entry          // slot -> user
	// epoch changes when slots are reassigned (Load); version at every change.
	epoch, version uint64
	dirty          bool
}

// entry is a user stored compactly: attributes as a key/value slice, the time as Unix
// seconds, so that a million users stay small.
type entry struct {
	email, name, company, plan string
	created                    int64 // Unix seconds; 0 when unknown
	attrs                      []string
}

// DefaultMaxUsers bounds a registry created with max <= 0.
const DefaultMaxUsers = 1000000

// NewRegistry returns an empty registry that holds at most max users.
func NewRegistry(max int) *Registry {
	if max <= 0 {
		max = DefaultMaxUsers
	}
	return &Registry{max: max, index: make(map[string]int32)}
}

// lookup returns the slot and entry of a registered user (-1 and nil when not
// registered); the caller holds the lock and must not keep the entry past it.
func (r *Registry) lookup(id string) (int32, *entry) {
	if i, ok := r.index[id]; ok {
		return i, &r.entries[i]
	}
	return -1, nil
}

// ItemError says which user of a batch is wrong, and which field.
type ItemError struct {
	// Index is the user's place in the batch (from 0).
	Index int
	// Field is the JSON name of the field found wrong.
	Field string
	// Err says what is wrong.
	Err error
}

// Error names the user by its index in the batch, and the field.
func (e *ItemError) Error() string { return fmt.Sprintf("[%d].%s: %v", e.Index, e.Field, e.Err) }

// Unwrap returns the underlying error.
func (e *ItemError) Unwrap() error { return e.Err }

// Check validates a user.
func (u *User) Check() (field string, err error) {
	switch {
	case strings.TrimSpace(u.ID) == "":
		return "id", errors.New("required")
	case len(u.ID) > 256:
		return "id", errors.New("longer than 256 bytes")
	}
	if u.Email != "" {
		if _, err := mail.ParseAddress(u.Email); err != nil {
			return "email", fmt.Errorf("%q is not an e-mail address", u.Email)
		}
	}
	if len(u.Attributes) > 64 {
		return "attributes", errors.New("more than 64")
	}
	for k := range u.Attributes {
		if k == "" || len(k) > 64 {
			return "attributes", fmt.Errorf("attribute name %q: want 1 to 64 bytes", k)
		}
	}
	return "", nil
}

// Upsert adds or replaces users. It checks every user first: on any error nothing
// changes. Beyond the registry's bound, new users are refused (an error naming the first
// one that does not fit).
func (r *Registry) Upsert(users []User) error {
	for i := range users {
		if f, err := users[i].Check(); err != nil {
			return &ItemError{Index: i, Field: f, Err: err}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	adding := 0
	seen := map[string]bool{}
	for i, u := range users {
		if _, ok := r.index[u.ID]; !ok && !seen[u.ID] {
			adding++
			seen[u.ID] = true
			if len(r.index)+adding > r.max {
				return &ItemError{Index: i, Field: "id", Err: fmt.Errorf("the registry is full (%d users)", r.max)}
			}
		}
	}
	for _, u := range users {
		e := entry{email: u.Email, name: u.Name, company: u.Company, plan: u.Plan}
		if !u.CreatedAt.IsZero() {
			e.created = u.CreatedAt.Unix()
		}
		if len(u.Attributes) > 0 {
			keys := make([]string, 0, len(u.Attributes))
			for k := range u.Attributes {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				e.attrs = append(e.attrs, k, u.Attributes[k])
			}
		}
		if i, ok := r.index[u.ID]; ok {
			r.entries[i] = e
		} else {
			r.index[u.ID] = int32(len(r.ids))
			r.ids = append(r.ids, u.ID)
			r.entries = append(r.entries, e)
		}
	}
	r.version++
	r.dirty = true
	return nil
}

func (e *entry) user(id string) User {
	u := User{ID: id, Email: e.email, Name: e.name, Company: e.company, Plan: e.plan}
	if e.created != 0 {
		u.CreatedAt = time.Unix(e.created, 0).UTC()
	}
	if len(e.attrs) > 0 {
		u.Attributes = make(map[string]string, len(e.attrs)/2)
		for i := 0; i+1 < len(e.attrs); i += 2 {
			u.Attributes[e.attrs[i]] = e.attrs[i+1]
		}
	}
	return u
}

func (e *entry) attr(name string) (string, bool) {
	for i := 0; i+1 < len(e.attrs); i += 2 {
		if e.attrs[i] == name {
			return e.attrs[i+1], true
		}
	}
	return "", false
}

// Get returns a registered user.
func (r *Registry) Get(id string) (User, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	_, e := r.lookup(id)
	if e == nil {
		return User{ID: id}, false
	}
	return e.user(id), true
}

// Len returns the number of registered users.
func (r *Registry) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.index)
}

// eachLocked calls fn for every user, in slot order; the caller holds the read lock.
func (r *Registry) eachLocked(fn func(slot int32, id string, e *entry)) {
	for i := range r.entries {
		fn(int32(i), r.ids[i], &r.entries[i])
	}
}

// MarshalJSON writes every user, sorted by id (for storage).
func (r *Registry) MarshalJSON() ([]byte, error) {
	r.mu.RLock()
	ids := make([]string, len(r.ids))
	copy(ids, r.ids)
	sort.Strings(ids)
	users := make([]User, len(ids))
	for i, id := range ids {
		users[i] = r.entries[r.index[id]].user(id)
	}
	r.mu.RUnlock()
	return json.Marshal(users)
}

// Load replaces the registry's users with those of data (written by MarshalJSON).
func (r *Registry) Load(data []byte) error {
	var users []User
	if err := json.Unmarshal(data, &users); err != nil {
		return err
	}
	fresh := NewRegistry(r.max)
	if err := fresh.Upsert(users); err != nil {
		return err
	}
	r.mu.Lock()
	r.index, r.ids, r.entries, r.dirty = fresh.index, fresh.ids, fresh.entries, false
	r.epoch++
	r.version++
	r.mu.Unlock()
	return nil
}

// MarkDirty marks the registry as changed (a save failed: try again).
func (r *Registry) MarkDirty() {
	r.mu.Lock()
	r.dirty = true
	r.mu.Unlock()
}

// TakeDirty reports whether the registry changed since the last call, and clears it.
func (r *Registry) TakeDirty() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.dirty
	r.dirty = false
	return d
}

// ParseCSV reads users from CSV with a header row: id (required), email, name, company,
// created_at (RFC 3339 or 2006-01-02), plan, and any other column as an attribute
// (attributes.NAME or plain NAME). Errors name the line and the column.
func ParseCSV(rd io.Reader) ([]User, error) {
	cr := csv.NewReader(rd)
	cr.FieldsPerRecord = -1
	header, err := cr.Read()
	if err != nil {
		if err == io.EOF {
			return nil, errors.New("line 1: empty file, want a header row (id,email,...)")
		}
		return nil, fmt.Errorf("line 1: %v", err)
	}
	col := map[string]int{}
	for i, h := range header {
		h = strings.TrimSpace(strings.ToLower(h))
		if h == "" {
			return nil, fmt.Errorf("line 1, column %d: empty column name", i+1)
		}
		if _, dup := col[h]; dup {
			return nil, fmt.Errorf("line 1, column %d: %q given twice", i+1, h)
		}
		col[h] = i
	}
	if _, ok := col["id"]; !ok {
		return nil, errors.New("line 1: no id column")
	}
	var users []User
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			return users, nil
		}
		line, _ := cr.FieldPos(0)
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", line, err)
		}
		if len(rec) != len(header) {
			return nil, fmt.Errorf("line %d: %d columns, the header has %d", line, len(rec), len(header))
		}
		u := User{}
		for name, i := range col {
			v := strings.TrimSpace(rec[i])
			switch name {
			case "id":
				u.ID = v
			case "email":
				u.Email = v
			case "name":
				u.Name = v
			case "company":
				u.Company = v
			case "plan":
				u.Plan = v
			case "created_at":
				if v == "" {
					continue
				}
				t, err := time.Parse(time.RFC3339, v)
				if err != nil {
					if t, err = time.Parse("2006-01-02", v); err != nil {
						return nil, fmt.Errorf("line %d, column created_at: %q is not an RFC 3339 time or a date", line, v)
					}
				}
				u.CreatedAt = t
			default:
				if v == "" {
					continue
				}
				if u.Attributes == nil {
					u.Attributes = map[string]string{}
				}
				u.Attributes[strings.TrimPrefix(name, "attributes.")] = v
			}
		}
		if f, err := u.Check(); err != nil {
			return nil, fmt.Errorf("line %d, column %s: %v", line, f, err)
		}
		users = append(users, u)
	}
}
