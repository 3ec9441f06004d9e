package buildinfo

import "testing"

func TestStringForms(t *testing.T) {
	cases := []struct {
		in   Info
		want string
	}{
		{Info{Version: "v1.2.3"}, "v1.2.3"},
		{Info{Version: "(devel)", Revision: "0123456789abcdef0123", Modified: true}, "(devel) (revision 0123456789ab, modified)"},
		{Info{Version: "v1.0.0", Revision: "abc", Time: "2026-12-02T06:00:00Z"}, "v1.0.0 (revision abc, 2026-12-02T06:00:00Z)"},
	}
	for _, c := range cases {
		if got := c.in.String(); got != c.want {
			t.Errorf("%+v: got %q, want %q", c.in, got, c.want)
		}
	}
}

func TestLinkTimeVersionWins(t *testing.T) {
	old := Version
	defer func() { Version = old }()
	Version = "v9.9.9-test"
	if got := Read().Version; got != "v9.9.9-test" {
		t.Fatalf("Read().Version = %q, want the link-time version", got)
	}
	Version = ""
	if got := Read().Version; got == "" {
		t.Fatal("Read().Version is empty without a link-time version")
	}
}
