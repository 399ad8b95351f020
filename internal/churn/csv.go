package churn

import (
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
)

// The columns that are not features.
const (
	IDColumn = "customer_id" // identifies a customer; not a feature
	Target   = "churn"       // the label: "yes" or "no"
)

// Feature describes one feature column, enough to build a schema from.
type Feature struct {
	Name string
	// Categorical features take one of Categories; the others are
	// numbers between Min and Max (Max is 0 where there is no bound).
	Categorical bool
	Categories  []string
	Integer     bool // a numeric feature that only takes whole values
	Min, Max    float64
	Description string
}

// Features returns the feature columns, in the order of the CSV header
// (between IDColumn and Target). The slice is the caller's to keep.
func Features() []Feature {
	return []Feature{
		{Name: "tenure_months", Integer: true, Min: 0, Max: 72, Description: "months as a customer"},
		{Name: "contract", Categorical: true, Categories: []string{MonthToMonth, OneYear, TwoYear}, Description: "contract term"},
		{Name: "monthly_charges", Min: 0, Description: "monthly bill, dollars"},
		{Name: "total_charges", Min: 0, Description: "billed over the tenure, dollars"},
		{Name: "support_calls", Integer: true, Min: 0, Description: "calls to support in the last 90 days"},
		{Name: "internet_service", Categorical: true, Categories: []string{DSL, Fiber, NoInternet}, Description: "internet service"},
		{Name: "payment_method", Categorical: true, Categories: []string{ElectronicCheck, MailedCheck, BankTransfer, CreditCard}, Description: "how the customer pays"},
		{Name: "paperless_billing", Categorical: true, Categories: []string{"yes", "no"}, Description: "paperless billing"},
		{Name: "senior_citizen", Integer: true, Min: 0, Max: 1, Description: "1 for a senior citizen, else 0"},
		{Name: "num_products", Integer: true, Min: 1, Max: 6, Description: "products held"},
	}
}

// Classes are the values of the Target column.
func Classes() []string { return []string{"no", "yes"} }

// Header returns the CSV header: IDColumn, the features, then Target.
func Header() []string {
	h := []string{IDColumn}
	for _, f := range Features() {
		h = append(h, f.Name)
	}
	return append(h, Target)
}

// Record returns the customer as a CSV record in Header's order. Money is
// written to the cent.
func (c *Customer) Record() []string {
	money := func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }
	return []string{
		c.ID,
		strconv.Itoa(c.TenureMonths),
		c.Contract,
		money(c.MonthlyCharges),
		money(c.TotalCharges),
		strconv.Itoa(c.SupportCalls),
		c.InternetService,
		c.PaymentMethod,
		yesNo(c.PaperlessBilling),
		strconv.Itoa(boolInt(c.SeniorCitizen)),
		strconv.Itoa(c.NumProducts),
		yesNo(c.Churn),
	}
}

// WriteCSV writes the customers as CSV with a Header line, "\n" line ends.
func WriteCSV(w io.Writer, customers []Customer) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(Header()); err != nil {
		return fmt.Errorf("churn: writing CSV: %w", err)
	}
	for i := range customers {
		if err := cw.Write(customers[i].Record()); err != nil {
			return fmt.Errorf("churn: writing CSV: %w", err)
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("churn: writing CSV: %w", err)
	}
	return nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
