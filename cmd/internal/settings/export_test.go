package settings

// RunSettingsForTest is runSettings, for the tests that compare it with
// the other commands' tables.
func RunSettingsForTest() *Set { return runSettings(&Run{}) }
