package drivertest

import (
	"errors"
	"testing"

	"github.com/ipoibd/ipoibd/ib"
)

// Refusal is a send work request PostSend is to take or refuse.
type Refusal struct {
	// Name says what is wrong with the request, in failures.
	Name string
	// AH and QPN are the request's address handle and remote QPN.
	AH  ib.AddressHandle
	QPN ib.QPN
	// Want is the sentinel the refusal wraps; nil when the request is to
	// be taken.
	Want error
}

// PostSendRefusals posts on qp, for each case, a copy of good (a request
// PostSend takes) and then the case's request, built from good with the
// case's AH and QPN. PostSend is to take both, or to take the first and
// stop at the second with the error the case names. settle runs the
// driver after each post and takes what the completion queues hold.
func PostSendRefusals(tb testing.TB, qp ib.QueuePair, good ib.SendWR, cases []Refusal, settle func()) {
	tb.Helper()
	for _, c := range cases {
		bad := good
		bad.ID, bad.AH, bad.RemoteQPN = good.ID+1, c.AH, c.QPN
		n, err := qp.PostSend([]ib.SendWR{good, bad})
		settle()
		switch {
		case c.Want == nil && (n != 2 || err != nil):
			tb.Errorf("%s: PostSend = %d, %v; want 2, nil", c.Name, n, err)
		case c.Want == nil:
		case n != 1 || !errors.Is(err, c.Want):
			tb.Errorf("%s: PostSend = %d, %v; want 1, %v", c.Name, n, err, c.Want)
		}
	}
}
