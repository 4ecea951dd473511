package caddyplugin

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/vigilgw/vigil/detector"
	"github.com/vigilgw/vigil/detector/cohort"
)

func init() {
	handleAdmin("/vigil/users", adminRoute{http.MethodPut: putUsers})
	handleAdmin("/vigil/users/{id}", adminRoute{http.MethodGet: getUser})
	handleAdmin("/vigil/cohorts/{rule}", adminRoute{http.MethodGet: getCohort})
	handleAdmin("/vigil/cohorts/{rule}/preview", adminRoute{http.MethodGet: previewCohort})
	handleAdmin("/vigil/optout", adminRoute{http.MethodGet: listOptOut})
	handleAdmin("/vigil/optout/{who}", adminRoute{http.MethodPut: putOptOut, http.MethodDelete: deleteOptOut})
}

// putUsers upserts a batch of users: a JSON array of {id, email, name, company,
// created_at, plan, attributes}. Every user is checked first; a bad one changes nothing
// and the error names it ("[3].email").
func putUsers(e *engine, w http.ResponseWriter, r *http.Request) error {
	var users []cohort.User
	if err := decodeBody(w, r, &users); err != nil {
		return err
	}
	if err := e.registry.Upsert(users); err != nil {
		var ie *cohort.ItemError
		if errors.As(err, &ie) {
			return badRequest(fmt.Sprintf("[%d].%s", ie.Index, ie.Field), "%v", err)
		}
		return badRequest("body", "%v", err)
	}
	writeJSON(w, http.StatusOK, map[string]int{"upserted": len(users), "users": e.registry.Len()})
	return nil
}

// userView is what GET /vigil/users/{id} answers: the registry's record (or the id
// alone for a user seen in traffic only), time to first hello world, and the caller
// history the store has.
type userView struct {
	cohort.User
	Registered bool `json:"registered"`
	// TTFHWSeconds is the time from sign-up (or first call) to the first 2xx, or so far
	// when there is none yet (TTFHWDone false); null when nothing is known.
	TTFHWSeconds *float64                `json:"ttfhw_seconds"`
	TTFHWDone    bool                    `json:"ttfhw_done"`
	History      *detector.CallerHistory `json:"history"`
}

func getUser(e *engine, w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	u, registered := e.registry.Get(id)
	h, seen := e.store.Caller(detector.DimUser, id)
	if !registered && !seen {
		return notFound("no user %q: not registered and not seen in traffic", id)
	}
	v := userView{User: u, Registered: registered}
	if seen {
		v.History = &h
	}
	if d, done, ok := e.cohorts.TTFHW(id, e.now()); ok {
		s := d.Seconds()
		v.TTFHWSeconds, v.TTFHWDone = &s, done
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func getCohort(e *engine, w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("rule")
	members, ok := e.cohorts.Members(id)
	if !ok {
		return notFound("no cohort rule with id %q", id)
	}
	writeJSON(w, http.StatusOK, map[string]any{"rule": id, "total": len(members), "members": members})
	return nil
}

func previewCohort(e *engine, w http.ResponseWriter, r *http.Request) error {
	user := r.URL.Query().Get("user")
	if user == "" {
		return badRequest("user", "user: required (?user=ID)")
	}
	if _, ok := e.cohorts.Members(r.PathValue("rule")); !ok {
		return notFound("no cohort rule with id %q", r.PathValue("rule"))
	}
	msg, err := e.cohorts.Preview(r.PathValue("rule"), user, e.now())
	if err != nil {
		return badRequest("user", "%v", err)
	}
	writeJSON(w, http.StatusOK, msg)
	return nil
}

func listOptOut(e *engine, w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, e.cohorts.OptOuts())
	return nil
}

// putOptOut adds an e-mail address or user id to the opt-out list: it gets no
// behavioral e-mail.
func putOptOut(e *engine, w http.ResponseWriter, r *http.Request) error {
	who := strings.TrimSpace(r.PathValue("who"))
	if who == "" {
		return badRequest("who", "who: an e-mail address or user id")
	}
	e.cohorts.OptOut(who, false)
	writeJSON(w, http.StatusOK, map[string]any{"opted_out": who, "at": e.now().UTC().Format(time.RFC3339)})
	return nil
}

func deleteOptOut(e *engine, w http.ResponseWriter, r *http.Request) error {
	if !e.cohorts.OptOut(r.PathValue("who"), true) {
		return notFound("%q is not on the opt-out list", r.PathValue("who"))
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
