// Package native is Drover's built-in runner for linear models: logistic
// regression (binary and multinomial) and linear regression, trained with
// gonum's L-BFGS with an L2 penalty on standardised features and one-hot
// encoded categories, evaluated on a hold-out, and served in-process from a
// versioned artifact format.
package native
