//go:build linux

package main

import (
	"strings"
	"testing"
	"time"
)

func TestUpdateReportReplacesOnlyTheRerunSections(t *testing.T) {
	report := "# recluster benchmarks\n\n| | |\n|---|---|\n| Date | then |\n| Suite run time | 25m |\n\nThe load generator.\n\n" +
		"## 1. Reload under load\n\nold one\n\n_Scenario `reload` took 1m._\n\n" +
		"## 5. Reload time\n\nold five\n\n_Scenario `reloadtime` took 1m._\n\n" +
		"## 8. Endurance: reload cycles\n\nold eight\n\n_Scenario `endurance` took 2m._\n\n"
	fresh := []renderedSection{
		{title: "5. Reload time, against a bare start", text: "## 5. Reload time, against a bare start\n\nnew five\n\n_Scenario `reloadtime` took 2m._\n\n"},
		{title: "8. Endurance: reload cycles", text: "## 8. Endurance: reload cycles\n\nnew eight\n\n_Scenario `endurance` took 3m._\n\n"},
	}
	got, err := updateReport(report, fresh, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| Date | then |", "old one", "new five", "new eight",
		"| Suite run time | 25m |\n| Rerun on ", "5. Reload time, against a bare start; 8. Endurance: reload cycles"} {
		if !strings.Contains(got, want) {
			t.Errorf("the updated report lacks %q:\n%s", want, got)
		}
	}
	for _, gone := range []string{"old five", "old eight"} {
		if strings.Contains(got, gone) {
			t.Errorf("the updated report still holds %q:\n%s", gone, got)
		}
	}
	if strings.Count(got, "## ") != 3 || !strings.Contains(got, "took 1m._\n\n## 5. Reload time, against") || !strings.HasSuffix(got, "took 3m._\n") {
		t.Errorf("sections are not kept apart as the suite writes them:\n%s", got)
	}

	again, err := updateReport(got, fresh[:1], time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(again, "| Rerun on ") != 2 {
		t.Errorf("a second update must keep the first one's row:\n%s", again)
	}
	if _, err := updateReport(report, []renderedSection{{title: "12. New", text: "## 12. New\n\nx\n"}}, time.Minute); err == nil {
		t.Error("a section the report lacks must be refused")
	}
}
